"""Generic training for every paper: one loop, driven by a per-paper step object.

Modules (import them directly; this package imports nothing at load time):

* :mod:`training.loop`: :class:`~training.loop.Trainer` and :class:`~training.loop.LoopConfig`,
  the one loop (strategy, checkpoints and resume, TensorBoard, progress/ETA, validation, NaN guard).
* :mod:`training.step`: :class:`~training.step.TrainStep`, the base class of step objects,
  :class:`~training.step.SingleModelTrainStep` (one model, one Adam, one loss: MIMO-UNet, IDC,
  Two-Way) and :func:`~training.step.minimize` (gradients scaled for the number of replicas).
* :mod:`training.config`: :class:`~training.config.TrainConfig`, a run's configuration (data,
  schedule, loop options, the paper's recipe), built once from the flags by the command layer
  (:mod:`cli.train_flags`) and passed down.
* :mod:`training.runner`: config checks and the assembly every ``train_<paper>.py`` shares
  (config -> strategy, data, step, validation -> ``Trainer``).
* :mod:`training.model_arguments`, :mod:`training.vgg_config`: JSON kwargs checked against a
  constructor, the ``vgg_weights`` setting -> a file (no TensorFlow).
* :mod:`training.inputs`: data settings -> data sources, per-epoch datasets and the validation set.
* :mod:`training.schedules`: learning-rate schedules keyed on the optimizer's iteration counter.
* :mod:`training.strategy`: ``default|mirrored|multi_worker`` -> ``tf.distribute`` strategy.
* :mod:`training.summaries`: TensorBoard scalars/images with TensorFlow core only.
* :mod:`training.tracking`: makes list-held layers visible to ``tf.train.Checkpoint``.
* :mod:`training.optimizers`: Adam as each paper's original code computed it (PyTorch's formula,
  :class:`~training.optimizers.PyTorchAdam`, or Keras's), :func:`~training.optimizers.make_adam`.
* :mod:`training.adversarial`: the WGAN-GP gradient penalty and critic loss (nested tape), WGAN
  weight clipping and the RP-GAN D_p critic loss (``clip_weights``, ``artifact_critic_loss``).
* :mod:`training.vgg_weights`: ``--vgg_weights`` -> a local VGG19 or VGG16 weight file, never
  downloading.
* :mod:`rundir` (top level): the run directory's layout, readers, checks, lock, leftovers.
* :mod:`training.gan_step`: :class:`~training.gan_step.AdversarialTrainStep`, the step of every
  GAN (n critic updates, then one generator update, on the same batch; every network and
  optimizer checkpointed; seeded draws equal across replicas and resumes).
* :mod:`training.steps` (``mimo_unet_step``, ``idc_step``, ``two_way_step``,
  ``gradientnet_step``, ``sen_step``, ``rpgan_step``): the six papers' step objects.
* :mod:`training.rpgan` (``deconv_cache``, ``replay_buffer``, ``rpgan_data``, ``rpgan_run``):
  RP-GAN's four helpers around its step.
* :mod:`training.sen_run`: SEN's stage checks and stage-2 inheritance of the stage-1 run.
* :mod:`training.flow_inputs`: motion-flow training data (SEN): per-epoch datasets, the
  validation set of flow labels, zero-flow and training-mean-flow baselines.

Step-object interface (subclass :class:`training.step.TrainStep`)
-----------------------------------------------------------------
``paper``, ``model_name``, ``model_kwargs``
    Attributes written to ``run_config.json``: the script/paper name, the registry name of the
    inference model and the ``models.build_model`` overrides it was built with.
``build(strategy)``
    Create every model and optimizer inside ``strategy.scope()`` and build the optimizer slots
    (``optimizer.build(model.trainable_variables)``). Called once, before any checkpoint restore
    and before the first step: Keras 3 otherwise drops Adam's moments on restore and cannot create
    slots inside a ``MirroredStrategy`` replica.
``checkpoint_items() -> dict``
    Trackables for ``tf.train.Checkpoint``: ``"model"`` must be the inference Keras model and
    ``"optimizer"`` its optimizer; GANs add every critic and its optimizer (``"critic"``,
    ``"critic_optimizer"``, :mod:`training.gan_step`). The loop
    adds ``step``, ``epoch`` and ``epoch_step``.
``train_step(blur, sharp) -> dict[str, scalar tensor]``
    One update on this replica's share of the global batch, (B/R, H, W, 3) float32 in [0, 1]; it
    runs under ``strategy.run`` inside the loop's ``tf.function``. Compute the per-replica *mean*
    loss and call :func:`training.step.minimize` (divides gradients by R; Keras sums them over
    replicas), so the update equals single-device training on the global batch. Return every term
    to log, the total as ``"loss"``; the loop averages them over replicas and stops on NaN/Inf. A
    step with several optimizers (GAN) calls ``minimize`` once per optimizer.
``learning_rates() -> dict[str, float]``
    Current learning rate of each optimizer (the base class reads every optimizer it finds in
    ``checkpoint_items()``).
``progress_terms``
    The returned terms shown on the progress line (default ``("loss",)``; TensorBoard gets all).
``inference_model``
    The Keras model evaluation and export use (default ``checkpoint_items()["model"]``).
``describe() -> dict``
    Optional extra lines for the run summary and ``run_config.json``.
``validation_metric``, ``validation_higher_is_better``, ``validation_scores(output, target)``,
``validation_text(result)``, ``validation_images(inputs, output, target)``
    What validation measures (default: PSNR/SSIM of the restored image, best = highest PSNR; SEN:
    flow MSE, best = lowest). The validation set gives ``tensors(i) -> (input, target)`` and its
    ``baselines()`` (blurred-input PSNR/SSIM; zero-flow and mean-flow MSE for flow sets).
``structure`` (optional attribute, or method returning a dict)
    Anything else the checkpoint's structure depends on (e.g. optimizer classes), recorded in
    ``run_config.json`` and compared on resume like ``run_config()``'s entries.

Run-directory contract (``--run_dir DIR``)
------------------------------------------
``run_config.json``
    ``{"model": <registry name>, "model_kwargs": {...}, "paper": ..., "optimizer": "Adam
    (PyTorch formula)", "config": {...}, ...}`` (``config``: the run's
    :class:`~training.config.TrainConfig` as nested JSON) plus the loop's bookkeeping (strategy,
    replicas, global batch, steps per epoch, total steps, validation description, versions). Written
    atomically at every (re)start. A resume compares every entry of the step object's
    ``run_config()`` (and its ``structure``, if it reports one) with the recorded ones before
    restoring, and refuses a difference by name.
``checkpoints/``
    A ``tf.train.CheckpointManager`` folder (``ckpt-<step>``, last ``--keep_checkpoints``) of a
    ``tf.train.Checkpoint(model=..., optimizer=..., step=..., epoch=..., epoch_step=...)``. Every
    model variable is stored under ``model/...`` (:mod:`training.tracking`: list-held layers are
    tracked as ``<attribute>/<index>``). To read one: build the model from ``run_config.json``,
    ``model.build((None, None, None, 3))``, ``training.tracking.track_layer_lists(model)``, then
    ``tf.train.Checkpoint(model=model).restore(prefix).expect_partial()``.
``best/``
    The same format, one checkpoint: the best validation score so far (highest PSNR; lowest flow
    MSE for SEN); ``best/best.json`` holds ``{"step", "epochs_completed", "psnr", "ssim",
    "num_images", "validation"}`` (SEN: ``"flow_mse"`` in place of ``"psnr", "ssim"``).
``tensorboard/``
    Event files: ``train/<loss terms>``, ``train/learning_rate``, ``train/steps_per_second``,
    ``train/epoch``, ``val/psnr``, ``val/ssim``, ``val/blurred_input_psnr|ssim`` and the images
    ``val_images/<i>/{blur,output,sharp}`` (SEN: ``val/flow_mse``, ``val/zero_flow_mse``,
    ``val/mean_flow_mse``, images ``val_images/<i>/{blur,flow_u,flow_v,label_u,label_v}``).
``final.weights.h5``
    Keras weights of the inference model, written at the end of the run.
"""
