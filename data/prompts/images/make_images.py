"""Draw the test images deterministically with PIL (simple shapes and colours; nothing downloaded).

    python data/prompts/images/make_images.py     # rewrites the PNGs beside this file
"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent


def red_square() -> Image.Image:
    image = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(image).rectangle((12, 8, 44, 40), fill=(220, 30, 30))
    return image


def blue_circle() -> Image.Image:
    image = Image.new("RGB", (48, 64), (250, 245, 230))
    ImageDraw.Draw(image).ellipse((6, 14, 42, 50), fill=(30, 60, 200))
    return image


def green_stripes() -> Image.Image:
    image = Image.new("RGB", (40, 40), "black")
    draw = ImageDraw.Draw(image)
    for x in range(0, 40, 10):
        draw.rectangle((x, 0, x + 4, 39), fill=(40, 190, 70))
    return image


def blank() -> Image.Image:
    return Image.new("RGB", (64, 48), "white")


IMAGES = {
    "red_square.png": red_square,
    "blue_circle.png": blue_circle,
    "green_stripes.png": green_stripes,
    "blank.png": blank,
}

if __name__ == "__main__":
    for name, draw in IMAGES.items():
        draw().save(HERE / name, optimize=True)
