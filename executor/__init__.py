"""The real executor: runs lowered schedules with torch.distributed (gloo on CPU, NCCL on CUDA) and records
measured traces. Entry points: `pipesim run` (executor.launch) and `python -m executor.worker` under torchrun.
"""
