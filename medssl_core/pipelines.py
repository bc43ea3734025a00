"""The view pipelines of the studies, as data (AugmentConfig fields). A study module may use one directly or
start from it; SmallDataSSL's is declared in replications/smalldatassl.py beside its decisions."""

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# lightly SimCLRTransform(input_size=224) defaults, used by the MIMeta Barlow Twins study
# (docs/studies/mimeta_barlow.md, 'Pretraining')
LIGHTLY_SIMCLR = {
    "crop_scale": [0.08, 1.0], "hflip": 0.5, "jitter": [0.8, 0.8, 0.8, 0.2], "jitter_p": 0.8, "grayscale": 0.2,
    "blur_p": 0.5, "blur_sigma": [0.1, 2.0], "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
}

# Gravity-2010 chest X-ray SimCLR (docs/studies/chestx_transfer.md, 'SimCLR pretraining'; how this pipeline differs
# from the notebook's: 'Open questions'): crop 0.8-1, jitter 0.4, grayscale 0.2, flip, small rotations
CHEST_XRAY_SIMCLR = {
    "crop_scale": [0.8, 1.0], "hflip": 0.5, "rotate_degrees": 10.0, "rotate_p": 0.5,
    "jitter": [0.4, 0.4, 0.0, 0.0], "jitter_p": 0.8, "grayscale": 0.2, "mean": [0.5], "std": [0.5],
}

# MedSGSSL SSL augmentation (docs/studies/medsgssl.md, 'Options 7, 8 and 10 (ViT-S)'). Brightness and contrast share
# one probability here (0.8 each in the code).
MEDSGSSL = {
    "crop_scale": [0.8, 1.0], "crop_p": 0.8, "hflip": 0.5, "rotate_degrees": 10.0, "rotate_p": 0.7,
    "jitter": [0.15, 0.15, 0.0, 0.0], "jitter_p": 0.8, "noise_p": 0.3, "noise_std": 0.03, "mean": [0.5], "std": [0.5],
}

PIPELINES = {"lightly_simclr": LIGHTLY_SIMCLR, "chest_xray_simclr": CHEST_XRAY_SIMCLR, "medsgssl": MEDSGSSL}
