import os

# Tests run on the CPU and must never touch the network (W&B stays offline).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
