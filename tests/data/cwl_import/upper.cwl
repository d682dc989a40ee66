cwlVersion: v1.2
class: CommandLineTool
doc: A file in capitals, through a shell pipe (ShellCommandRequirement).
requirements:
  ShellCommandRequirement: {}
inputs:
  text:
    type: File
  label:
    type: string
    default: out
outputs:
  upper:
    type: File
    outputBinding: {glob: "$(inputs.label).txt"}
arguments:
  - {valueFrom: "cat $(inputs.text.path) | tr a-z A-Z >", shellQuote: false}
  - $(inputs.label).txt
