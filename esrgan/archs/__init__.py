"""Network architectures, one small module each (import them directly):

- ``esrgan.archs.blocks``: the trunk blocks (ResidualDenseBlock, RRDB, ResBlock) and their init.
- ``esrgan.archs.rrdbnet``: the generator (``Generator``, ``build_generator``,
  ``receptive_field``); every paper change to G is one argument of ``build_generator``.
- ``esrgan.archs.discriminator``: ``VGGStyleDiscriminator`` (SRGAN/ESRGAN D).
- ``esrgan.archs.vgg``: ``VGGFeatureExtractor`` (VGG19 features for the perceptual loss).

Nothing is re-exported here on purpose: ``vgg`` uses ``esrgan.weights``, which uses
``rrdbnet``; importing the submodules explicitly keeps that chain free of import cycles.
"""
