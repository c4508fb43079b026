"""The six papers' step objects (:class:`training.step.TrainStep` subclasses), one module each:
``mimo_unet_step``, ``idc_step``, ``two_way_step``, ``gradientnet_step``, ``sen_step``,
``rpgan_step``. The GAN papers' steps build on :mod:`training.gan_step`. Import the modules
directly; this package imports nothing at load time."""
