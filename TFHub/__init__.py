"""Pretrained TF-Hub BigGAN generators: read the modules, convert them to `BigGAN.Generator`
(biggan-<res>) or `BigGANdeep.Generator` (biggan-deep-<res>).

`converter` (the BigGAN mapping and the CLI), `deep` (the BigGAN-deep mapping), `variables`
(reading and dumping module variables), `biggan_v1` (the TF-Hub BigGAN generator in TF's own
layout, used to check the conversion). See TFHub/README.md.
"""
