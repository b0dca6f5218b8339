"""Building blocks shared by model families, one module each (import them from there):

* :mod:`dgm.nn.mlp` -- the activation table and the multilayer-perceptron builder;
* :mod:`dgm.nn.masked` -- masked linear and convolutional layers, MADE networks;
* :mod:`dgm.nn.pixel` -- cached single-pixel convolutions for fast PixelCNN decoding;
* :mod:`dgm.nn.embeddings` -- time embeddings and the time-conditioned residual MLP;
* :mod:`dgm.nn.unet` -- the small U-Net of the image diffusion models.
"""
