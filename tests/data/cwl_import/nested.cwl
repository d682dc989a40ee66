cwlVersion: v1.2
class: Workflow
doc: pipeline.cwl as one step (a sub-workflow), and a step below it reading its output.
requirements:
  SubworkflowFeatureRequirement: {}
inputs:
  text: File
outputs:
  again:
    type: File
    outputSource: recount/count
steps:
  inner:
    run: pipeline.cwl
    in: {text: text}
    out: [upper, count]
  recount:
    run: count.cwl
    in: {text: inner/upper}
    out: [count]
