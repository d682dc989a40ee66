cwlVersion: v1.2
class: Workflow
doc: Capitals, then the words counted; the first step's file flows to the second.
inputs:
  text: File
outputs:
  upper:
    type: File
    outputSource: shout/upper
  count:
    type: File
    outputSource: count/count
steps:
  shout:
    run: upper.cwl
    in: {text: text, label: {default: shouted}}
    out: [upper]
  count:
    run: count.cwl
    in: {text: shout/upper}
    out: [count]
