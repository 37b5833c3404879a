"""Pieces that more than one method is built from: the coreset sampler, the ViT parts of MMR and MAE + LoRA, and
the frozen-teacher / trained-student pair of RD4AD and MMR."""
