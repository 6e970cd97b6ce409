"""Draw the extension icon: a stylised axial abdominal CT slice with colored organs (128 x 128 PNG).

Drawn with Pillow at 4x and downsampled, so edges are anti-aliased. Colors follow the module's segment
colors (Slicer's GenericAnatomyColors). Writes DVCLSegmentation.png (extension icon, repository root) and
DVCLSegmentation/Resources/Icons/DVCLSegmentation.png (module icon).

Usage::

    python tools/make_icon.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [ROOT / "DVCLSegmentation.png", ROOT / "DVCLSegmentation" / "Resources" / "Icons" / "DVCLSegmentation.png"]
SIZE = 128
S = 4  # supersampling factor

LIVER = (221, 130, 101)
SPLEEN = (157, 108, 162)
KIDNEY = (185, 102, 83)
AORTA = (224, 97, 76)
IVC = (0, 151, 206)
STOMACH = (240, 190, 160)  # lighter than Slicer's, to stand apart from the liver at icon size
PANCREAS = (249, 180, 111)
GALLBLADDER = (139, 150, 98)


def _box(cx: float, cy: float, rx: float, ry: float):
    return [S * (cx - rx), S * (cy - ry), S * (cx + rx), S * (cy + ry)]


def draw_icon() -> Image.Image:
    img = Image.new("RGBA", (SIZE * S, SIZE * S), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    # rounded dark tile (the CT field of view)
    d.rounded_rectangle([S * 2, S * 2, S * 126, S * 126], radius=S * 18, fill=(18, 20, 24, 255))
    # body: soft tissue with a fat rim
    d.ellipse(_box(64, 66, 56, 44), fill=(118, 110, 100, 255))
    d.ellipse(_box(64, 66, 52, 40), fill=(150, 140, 128, 255))
    # muscles of the back
    d.ellipse(_box(50, 94, 11, 8), fill=(128, 96, 88, 255))
    d.ellipse(_box(78, 94, 11, 8), fill=(128, 96, 88, 255))
    # vertebra (bright bone)
    d.ellipse(_box(64, 88, 9, 8), fill=(236, 232, 222, 255))
    d.ellipse(_box(64, 88, 4.5, 4), fill=(150, 140, 128, 255))
    # organs (image left = patient right, radiological convention)
    d.ellipse(_box(36, 60, 23, 22), fill=LIVER + (255,))  # liver, right lobe
    d.ellipse(_box(52, 46, 16, 9), fill=LIVER + (255,))  # liver, left lobe
    d.ellipse(_box(36, 72, 7, 5), fill=GALLBLADDER + (255,))  # gallbladder
    d.ellipse(_box(96, 62, 11, 16), fill=SPLEEN + (255,))  # spleen
    d.ellipse(_box(75, 54, 13, 10), fill=STOMACH + (255,))  # stomach
    d.ellipse(_box(62, 71, 16, 5), fill=PANCREAS + (255,))  # pancreas
    d.ellipse(_box(42, 86, 8, 10), fill=KIDNEY + (255,))  # right kidney
    d.ellipse(_box(86, 86, 8, 10), fill=KIDNEY + (255,))  # left kidney
    d.ellipse(_box(69, 78, 5, 5), fill=AORTA + (255,))  # aorta
    d.ellipse(_box(56, 78, 5, 4), fill=IVC + (255,))  # inferior vena cava
    img = img.filter(ImageFilter.GaussianBlur(radius=S * 0.35))
    return img.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> int:
    icon = draw_icon()
    for target in TARGETS:
        target.parent.mkdir(parents=True, exist_ok=True)
        icon.save(target)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
