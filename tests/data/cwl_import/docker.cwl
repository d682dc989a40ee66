cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {dockerPull: "debian:stable"}
inputs: []
outputs: []
baseCommand: "true"
