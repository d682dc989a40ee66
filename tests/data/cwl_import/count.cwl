cwlVersion: v1.2
class: CommandLineTool
doc: Count the words of a file (a tool of scatter.cwl and pipeline.cwl).
inputs:
  text: File
baseCommand: [wc, -w]
stdin: $(inputs.text.path)
stdout: $(inputs.text.nameroot).count
outputs:
  count:
    type: stdout
