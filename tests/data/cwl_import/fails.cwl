cwlVersion: v1.2
class: CommandLineTool
inputs: []
outputs: []
baseCommand: [sh, -c, "echo going wrong >&2; exit 3"]
