"""ImageNet-256: ADM centre crop, SD-VAE latent cache (`flowzoo prepare imagenet256`), the latent dataset."""

from flowzoo.data.imagenet.dataset import ImageNetLatents, LatentStream, open_cache
from flowzoo.data.imagenet.folder import center_crop_arr, load_cropped, scan_image_folder
from flowzoo.data.imagenet.prepare import MANIFEST, prepare_latents, read_manifest
from flowzoo.data.imagenet.vae import SD_SCALE, load_vae

__all__ = ["ImageNetLatents", "LatentStream", "open_cache", "center_crop_arr", "load_cropped", "scan_image_folder",
           "MANIFEST", "prepare_latents", "read_manifest", "SD_SCALE", "load_vae"]
