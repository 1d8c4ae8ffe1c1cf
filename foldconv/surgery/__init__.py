"""Whole-model surgery: rewrite a model into an equivalent form, verify it, time the forms, export to ONNX."""
