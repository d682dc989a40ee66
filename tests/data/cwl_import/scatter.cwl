cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  texts: File[]
outputs:
  counts:
    type: File[]
    outputSource: count/count
steps:
  count:
    run: count.cwl
    scatter: text
    in: {text: texts}
    out: [count]
