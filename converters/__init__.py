"""edgecnn.converters: PyTorch -> .tflite through litert-torch or torch -> ONNX -> onnx2tf,
TFLite metadata for apps, and verification of every file against the PyTorch model."""
