"""Studies that train and evaluate many models: image-size sweeps, the few-shot decay study, ResAD's
multi-shot study, and the Slurm scripts that spread them over a cluster."""
