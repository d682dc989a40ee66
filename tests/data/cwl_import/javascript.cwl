cwlVersion: v1.2
class: CommandLineTool
requirements:
  InlineJavascriptRequirement: {}
inputs:
  n: int
outputs: []
baseCommand: echo
arguments: ["$(inputs.n + 1)"]
