"""Data-parallel training over torch.distributed, for runs started by `torchrun` (or any launcher that
sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT).

With one process every function here is a no-op (or the identity), so the single-process path is the
plain loop. With several, `training.train` wraps the model in DDP (`distributed: ddp`) or shards it
with FSDP2 (`distributed: fsdp`); rank 0 alone writes files and the others wait at barriers.

Only the standard library is imported at module level: the command line imports this module cheaply.
"""
from __future__ import annotations

import contextlib
import os


def launched() -> bool:
    """Started by a launcher with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    if not launched():
        return False
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    if not active():
        return 1
    import torch.distributed as dist
    return dist.get_world_size()


def rank() -> int:
    if not active():
        return 0
    import torch.distributed as dist
    return dist.get_rank()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(device: str = "auto") -> bool:
    """Join the process group the launcher describes (NCCL on GPUs, else gloo); True when distributed."""
    if not launched():
        return False
    import torch
    import torch.distributed as dist

    from ..device import resolve as resolve_placement

    if not dist.is_initialized():
        cuda = resolve_placement(device).device.type == "cuda" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def finish() -> None:
    if active():
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        import torch.distributed as dist
        dist.barrier()


def broadcast(obj):
    """Rank 0's `obj` on every rank (any picklable value)."""
    if not active():
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(value: float, device) -> float:
    """The mean of a float over all ranks."""
    if not active():
        return value
    import torch
    import torch.distributed as dist
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


# -- wrapping the model ------------------------------------------------------------------------------

def wrap(model, kind: str, device):
    """The module to run forward/backward on: DDP, FSDP2 (shards `model` in place) or `model` itself."""
    if not active():
        return model
    if kind == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for layer in _layers(model):  # one all-gather per decoder layer, not one for the whole model
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _layers(model):
    inner = getattr(model, "model", None)
    return list(getattr(inner, "layers", []))


def sharded(model) -> bool:
    return any(type(q).__name__ == "DTensor" for q in model.parameters())


def sync_grads(train_model, last: bool):
    """Context for one micro-batch: gradients are reduced across ranks only on the step's last one."""
    if hasattr(train_model, "no_sync"):  # DDP (also through torch.compile's wrapper)
        return contextlib.nullcontext() if last else train_model.no_sync()
    if hasattr(train_model, "set_requires_gradient_sync"):  # FSDP2
        train_model.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def full_parameters(model, everywhere: bool = False) -> dict:
    """name -> full CPU tensor of every parameter; a collective under FSDP, with the values on rank 0
    only, or on every rank (and its device) with `everywhere`."""
    names = [n for n, _ in model.named_parameters()]
    if not sharded(model):
        return {n: q.detach().cpu().contiguous() for n, q in model.named_parameters()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))
    return {n: full[n].contiguous() for n in names if n in full}


def _opt_names(model, opt) -> list[str]:
    """Parameter names in the optimiser's own order (the integer ids of its state_dict)."""
    by_id = {id(q): n for n, q in model.named_parameters()}
    return [by_id[id(q)] for g in opt.param_groups for q in g["params"]]


def full_optimizer_state(model, opt) -> dict:
    """The optimiser's state_dict with integer ids and full tensors; a collective under FSDP."""
    if not sharded(model):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    full = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if "state" not in full:  # ranks other than 0 get nothing back
        return {"state": {}, "param_groups": []}
    index = {n: i for i, n in enumerate(_opt_names(model, opt))}
    return {"state": {index[n]: s for n, s in full["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]}


def load_full_state(model, opt, parameters: dict, opt_state: dict) -> None:
    """Put full (unsharded) parameters and optimiser state, the same on every rank, into the model."""
    if not sharded(model):
        import torch
        with torch.no_grad():
            for name, q in model.named_parameters():
                q.copy_(parameters[name])
        opt.load_state_dict(opt_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict
    options = StateDictOptions(full_state_dict=True, strict=False)  # tied lm_head is not a parameter name
    set_model_state_dict(model, parameters, options=options)
    names = _opt_names(model, opt)
    by_name = {"state": {names[i]: s for i, s in opt_state["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in opt_state["param_groups"]]}
    set_optimizer_state_dict(model, opt, by_name, options=StateDictOptions(full_state_dict=True))

