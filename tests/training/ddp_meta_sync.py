"""Run under torchrun: after one DDP meta step on rank-specific tasks, every rank must hold the
same weights (i.e. DDP averaged the second-order meta-gradients), and they must equal a
single-process step on the union of the tasks."""
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from training import common
from training.meta import MetaObjective
from training.net import SRNet

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
torch.manual_seed(0)
chans = (3, 8, 8, 3)
g = torch.Generator().manual_seed(123)
tasks = [torch.rand(world, 3, s, s, generator=g) for s in (8, 8, 16, 16)]
ref = SRNet(chans)
model = SRNet(chans)
model.load_state_dict(ref.state_dict())

obj = DDP(MetaObjective(model, 2, 0.1, False))
opt = torch.optim.SGD(model.parameters(), lr=1.0)
obj(*[t[rank:rank + 1] for t in tasks]).backward()
opt.step()

ref_obj = MetaObjective(ref, 2, 0.1, False)
ref_opt = torch.optim.SGD(ref.parameters(), lr=1.0)
ref_obj(*tasks).backward()
ref_opt.step()
for p, q in zip(model.parameters(), ref.parameters(), strict=True):
    assert torch.allclose(p, q, atol=1e-6), (rank, (p - q).abs().max())
    s = p.detach().clone()
    dist.all_reduce(s)
    assert torch.allclose(s / world, p, atol=1e-7)
print(f"rank {rank} ok", flush=True)
common.teardown()  # barrier, destroy, exit without C++ destructors (see there)
