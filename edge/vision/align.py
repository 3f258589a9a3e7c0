"""Alignment by 5 landmarks: a similarity transform onto the ArcFace template."""

from __future__ import annotations

import cv2
import numpy as np

# The ArcFace/SFace 112×112 template, in facematch's landmark order.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The least-squares rotation + uniform scale + translation (Umeyama) taking landmarks onto the template."""
    src = landmarks.astype(np.float64)
    dst = template.astype(np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / src_c.var(axis=0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align(image: np.ndarray, landmarks: np.ndarray, size: int = 112, template: np.ndarray = ARCFACE_112) -> np.ndarray:
    scaled = template * (size / 112.0)
    matrix = similarity_transform(landmarks, scaled)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
