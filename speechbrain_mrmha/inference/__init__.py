"""Inference (services ring): pretrained folders (``pretrained``),
ONNX / TorchScript export (``export``), runtime backends behind one encoder
contract (``backends``), length-batched and cached embedding
(``extraction``), and the model object users hold (``model``)."""
