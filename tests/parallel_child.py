"""Run by tests/test_parallel.py in a subprocess with 8 forced host CPU devices
(XLA_FLAGS must be set before jax is imported, so this cannot run in the test process)."""

import json
import os
import sys
import tempfile

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import mlp_jax as mj  # noqa: E402
from mlp_jax import batches, checkpoint, data, optim, parallel, sweep, train  # noqa: E402


def maxdiff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


out = {"devices": jax.device_count()}
ds = data.digits()
spec = mj.MLPSpec((64, 64, 10), reg=1e-3)
opt = optim.momentum(0.05)
mesh = parallel.data_mesh(8)
x, y = jnp.asarray(ds.X_train[:256]), jnp.asarray(ds.y_train[:256])
batch = NamedSharding(mesh, P("data"))
hyper = spec.hyper(jnp.float32)
for grad in train.GRAD_SOURCES:
    single = train.make_train_step(spec, opt, grad)
    for form in train.FORMS:
        step = train.make_train_step(spec, opt, grad, mesh=mesh, form=form)
        s1 = s2 = train.init_state(jax.random.key(0), spec, opt)
        s2 = parallel.replicate(s2, mesh)
        for _ in range(100):
            s1, _ = single(s1, x, y, hyper)
            s2, _ = step(s2, jax.device_put(x, batch), jax.device_put(y, batch), hyper)
        out[f"{form}_{grad}"] = maxdiff(s1.params, s2.params)
        out[f"{form}_{grad}_sharding"] = str(s2.params[0]["W"].sharding.spec)

for name, (n, bs) in {"uneven_error": (1000, 100), "uneven_last_error": (300, 64)}.items():
    try:
        batches.check(n, bs, devices=mesh.shape["data"])
    except ValueError as e:
        out[name] = str(e)

# A sharded run's checkpoint resumes on one device, and a one-device checkpoint resumes sharded.
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "c.npz")
    full = train.fit(spec, ds, opt, epochs=4, batch_size=64, key=jax.random.key(1),
                     eval_every=1, progress=False)
    train.fit(spec, ds, opt, epochs=2, batch_size=64, key=jax.random.key(1), mesh=mesh,
              checkpoint_path=path, progress=False)
    resumed = train.fit(spec, ds, opt, epochs=4, batch_size=64, key=jax.random.key(1),
                        eval_every=1, checkpoint_path=path, resume=True, progress=False)
    out["sharded_then_single"] = maxdiff(full.state.params, resumed.state.params)
    path2 = os.path.join(d, "c2.npz")
    train.fit(spec, ds, opt, epochs=2, batch_size=64, key=jax.random.key(1), eval_every=1,
              checkpoint_path=path2, progress=False)
    back = train.fit(spec, ds, opt, epochs=4, batch_size=64, key=jax.random.key(1),
                     mesh=mesh, checkpoint_path=path2, resume=True, progress=False)
    out["single_then_sharded"] = maxdiff(full.state.params, back.state.params)
    out["history_len"] = len(checkpoint.load_params(path2).history)
# fit over the mesh with dropout: gspmd draws the one-device masks, shard_map its own per shard.
dspec = mj.MLPSpec((64, 64, 10), reg=1e-3, dropout=0.3)
one = train.fit(dspec, ds, opt, epochs=3, batch_size=64, key=jax.random.key(2), progress=False)
for form in train.FORMS:
    r = train.fit(dspec, ds, opt, epochs=3, batch_size=64, key=jax.random.key(2), mesh=mesh,
                  form=form, progress=False)
    out["fit_dropout_" + form] = maxdiff(one.state.params, r.state.params)
# Batch norm over the mesh: gspmd normalizes by the global batch's statistics (the one-device
# run); shard_map by each shard's own (a reference on one device: backprop on each eighth of
# the batch, gradients and updated statistics averaged), its running statistics the mean.
bspec = mj.MLPSpec((64, 32, 32, 10), norm="batchnorm")
bopt = optim.momentum(0.05)
single = train.make_train_step(bspec, bopt)
ref_one = ref_shards = train.init_state(jax.random.key(3), bspec, bopt)
placed = {form: parallel.replicate(ref_one, mesh) for form in train.FORMS}
steps = {form: train.make_train_step(bspec, bopt, mesh=mesh, form=form) for form in train.FORMS}
for i in range(20):
    xb, yb = x[(i * 64) % 256:][:64], y[(i * 64) % 256:][:64]
    ref_one, _ = single(ref_one, xb, yb)
    parts = [mj.backprop(ref_shards.params, xb[8 * k:8 * k + 8],
                         yb[8 * k:8 * k + 8], bspec, train=True, stats=ref_shards.stats)
             for k in range(8)]
    grads, stats = jax.tree.map(lambda *a: sum(a) / 8, *[(g, s) for _, g, s in parts])
    updates, opt_state = bopt.update(grads, ref_shards.opt_state, ref_shards.params)
    ref_shards = ref_shards._replace(params=optim.apply_updates(ref_shards.params, updates),
                                     opt_state=opt_state, step=ref_shards.step + 1, stats=stats)
    for form in train.FORMS:
        placed[form], _ = steps[form](placed[form], jax.device_put(xb, batch),
                                      jax.device_put(yb, batch))
out["bn_gspmd"] = maxdiff((ref_one.params, ref_one.stats), (placed["gspmd"].params,
                                                              placed["gspmd"].stats))
out["bn_shard_map"] = maxdiff((ref_shards.params, ref_shards.stats),
                              (placed["shard_map"].params, placed["shard_map"].stats))
out["bn_forms_differ"] = maxdiff(placed["gspmd"].params, placed["shard_map"].params)
try:
    train.fit(bspec, ds, bopt, epochs=1, batch_size=8, key=jax.random.key(0), mesh=mesh)
except ValueError as e:
    out["bn_per_device_error"] = str(e)
# A sweep sharded over a config axis of 8 devices (12 configs: padded to 16) == on one.
sspec = mj.MLPSpec((2, 16, 3), dropout=0.1)
sds = data.spiral(points_per_class=20)
configs = sweep.grid(seeds=(0, 1, 2), lrs=(0.1, 0.3), regs=(0.0, 1e-2))
runs = {name: sweep.sweep(sspec, sds, lambda lr: optim.sgd(lr), configs, epochs=3,
                          batch_size=20, mesh=mesh_, batching=batching)
        for name, mesh_, batching in [("one", None, "vmap"), ("map", "all", "map"),
                                      ("vmap", sweep.config_mesh(8), "vmap")]}
for name in ("map", "vmap"):
    out["sweep_" + name] = maxdiff(runs["one"].params, runs[name].params)
out["sweep_shapes"] = [runs["map"].losses.shape, jax.tree.leaves(runs["map"].params)[0].shape]
json.dump(out, sys.stdout)
