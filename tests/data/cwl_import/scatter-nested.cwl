cwlVersion: v1.2
class: Workflow
doc: pipeline.cwl once per file (a scattered sub-workflow, run inside its step's task).
requirements:
  SubworkflowFeatureRequirement: {}
  ScatterFeatureRequirement: {}
inputs:
  texts: File[]
outputs:
  counts:
    type: File[]
    outputSource: each/count
steps:
  each:
    run: pipeline.cwl
    scatter: text
    in: {text: texts}
    out: [count]
