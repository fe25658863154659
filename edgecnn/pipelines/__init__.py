"""The pipelines: export, quantize-and-report, evaluate and bench as Python APIs over the stages below
(models, data, weights -> quantize -> converters -> benchmark harness). The CLI calls only these."""
