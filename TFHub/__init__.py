"""Pretrained TF-Hub BigGAN generators: read the modules, convert them to `BigGAN.Generator`.

`converter` (mapping and CLI), `variables` (reading and dumping module variables), `biggan_v1`
(the TF-Hub generator in TF's own layout, used to check the conversion). See TFHub/README.md.
"""
