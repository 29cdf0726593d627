"""Write tests/golden/inception/tf1_resize.npz: TensorFlow's own legacy bilinear resize to 299.

Needs TensorFlow (any 2.x; `pip install tensorflow-cpu` in a separate environment) and numpy,
not torch:

    python scripts/utils/make_tf1_resize_golden.py

For each input size it draws one uint8 image from `numpy.random.RandomState(seed)` (stable
across numpy versions, so the test draws the same image), resizes it to 299 x 299 with
`tf.compat.v1.image.resize_bilinear(align_corners=False, half_pixel_centers=False)` (the TF1
`ResizeBilinear` kernel that the FID Inception graph runs) on float32 values 0..255, and keeps
the output at rows/columns `INDEX` (every 7th, plus the last, where the clamp acts) as C x R x R.
"""
import os

import numpy as np
import tensorflow as tf

SIZES = ((32, 32), (64, 64), (128, 128), (37, 53), (300, 450), (299, 299))
INDEX = np.array(list(range(0, 299, 7)) + [298])


def input_image(height: int, width: int) -> np.ndarray:
    """The test image for a size: uint8, 3 x H x W."""
    return np.random.RandomState(height * 1000 + width).randint(
        0, 256, size=(3, height, width)).astype(np.uint8)


def main() -> None:
    out = {'index': INDEX, 'tensorflow_version': np.array(tf.__version__)}
    for height, width in SIZES:
        image = input_image(height, width).transpose(1, 2, 0)[None].astype(np.float32)
        resized = tf.compat.v1.image.resize_bilinear(image, (299, 299), align_corners=False,
                                                     half_pixel_centers=False).numpy()[0]
        out[f'{height}x{width}'] = resized.transpose(2, 0, 1)[:, INDEX][:, :, INDEX]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, 'tests', 'golden', 'inception', 'tf1_resize.npz')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **out)
    print(f'wrote {path} with TensorFlow {tf.__version__}')


if __name__ == '__main__':
    main()
