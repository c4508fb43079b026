"""RP-GAN's training helpers around its step (:mod:`training.steps.rpgan_step`):
``deconv_cache`` (cached SEN flows and level-1 solutions I*_1), ``replay_buffer`` (the deep
levels' items, regenerated from a frozen snapshot), ``rpgan_data`` (pre-training batches and
buffer cycles as loop segments, the framework validation set) and ``rpgan_run`` (a run assembled
from its config). Import the modules directly; this package imports nothing at load time."""
