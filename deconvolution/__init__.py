"""Non-uniform deconvolution (``sen_rpgan.md`` §3, §6), TensorFlow only: the blur operator K and
its adjoint built from a motion-flow map (:mod:`deconvolution.blur_operator`) and the HQS data
step solved by conjugate gradients (:mod:`deconvolution.hqs`). Unlike ``models/``, this package
uses TensorFlow directly (dynamic-size tap tables, sparse matrices), so it does not run under the
JAX or PyTorch Keras backends."""
