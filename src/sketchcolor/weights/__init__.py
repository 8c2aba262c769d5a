"""Model weights shipped inside the package (``default.safetensors``); data only, no code."""
