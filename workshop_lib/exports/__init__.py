"""Models for deployment: each method's scoring graph in a portable format, checked against PyTorch."""
