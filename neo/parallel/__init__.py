"""neo.parallel: the only package that knows about devices.

- `config.MeshConfig` (the `mesh` config group; presets in `neo/conf/mesh/`), `presets.preset(name)`
- `shape.parse_mesh_shape("x:16,y:8")`, `mesh.make_mesh(cfg, devices=None)`, `mesh.mesh_and_rules(cfg)`,
  `mesh.placement(mesh, rules)` (the context sharded programs trace and run in)
- `layout.layout_rules("batch:x,heads:y", axes)` -> flax logical-axis rules; `layout.validate_layout(tree, mesh, rules)`
- `layout.axis_ways(name, rules, mesh.shape)`: how many ways the mesh splits a logical axis (e.g. the batch replicas)
- `flops.peak_flops_per_device(cfg_or_devices)`, `flops.memory_per_device(cfg, devices)`,
  `flops.bandwidth_per_device(cfg)` (HBM and interconnect, from the sourced table `flops.BANDWIDTH`)
- `distributed.initialize(coordinator, num_processes, process_id)` for multi-host jobs
- `search`: candidate layouts and mesh shapes, compiled against abstract inputs and ranked (`screen`: the cheap
  compile up to buffer assignment, in a subprocess); `compiled`: what a compiled program costs per device (memory,
  FLOPs, collectives from its HLO, the roofline step time); `targets.target_devices`: the devices to compile for, real
  ones, libtpu's ahead-of-time TPU devices (exact), or simulated CPUs (an estimate)

Importing this package does not import JAX (config validation must stay fast).
"""
