"""The library behind the pipeline's stages (`stages/`): data, model, training loop, reproducible TensorFlow set-up,
atomic outputs and one-line errors; plus the sweep subsystem (`fmnist.sweep`) and the DVC gap-fillers
(`fmnist.dvc_gaps`)."""
