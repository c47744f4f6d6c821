"""The pipeline's four stages, one module each, run by `dvc.yaml` as `python -m stages.<name>`.

Each reads its params and files, calls the library (`fmnist`) and writes its outputs atomically.
"""
