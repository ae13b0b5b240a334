"""Report images drawn with OpenCV (no plotting library needed): labelled heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.errors import DataError

# White to dark blue (BGR) as a cell's value goes from 0 to 1.
_WHITE = np.array([255, 255, 255])
_TO_BLUE = np.array([75, 185, 225])


def draw_heatmap(
    values,
    row_labels,
    column_labels,
    path,
    cell_text=None,
    row_title="",
    column_title="",
    cell=34,
) -> Path:
    """Writes a PNG of `values` `[rows, columns]` in [0, 1], one shaded cell each.

    Column labels read bottom to top above the cells, row labels left of them;
    `cell_text` (same shape, strings, "" for none) is written inside the cells.
    """
    import cv2

    values = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    rows, columns = values.shape
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.42

    def width_of(labels):
        return max([cv2.getTextSize(str(t), font, scale, 1)[0][0] for t in labels] + [0]) + 12

    row_width, column_height = width_of(row_labels), width_of(column_labels)
    left, top = row_width + 24, column_height + 40
    image = np.full((top + rows * cell + 12, left + columns * cell + 12, 3), 255, np.uint8)
    for i in range(rows):
        for j in range(columns):
            y, x = top + i * cell, left + j * cell
            shade = _WHITE - values[i, j] * _TO_BLUE
            cv2.rectangle(image, (x, y), (x + cell, y + cell), shade.tolist(), -1)
            cv2.rectangle(image, (x, y), (x + cell, y + cell), (200, 200, 200), 1)
            text = cell_text[i][j] if cell_text is not None else ""
            if text:
                colour = (255, 255, 255) if values[i, j] > 0.5 else (0, 0, 0)
                (w, h), _ = cv2.getTextSize(text, font, scale, 1)
                origin = (x + (cell - w) // 2, y + (cell + h) // 2)
                cv2.putText(image, text, origin, font, scale, colour, 1, cv2.LINE_AA)
    for i, label in enumerate(row_labels):
        (w, h), _ = cv2.getTextSize(str(label), font, scale, 1)
        y = top + i * cell + (cell + h) // 2
        cv2.putText(image, str(label), (left - w - 8, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    # Column labels: written horizontally on a strip, then turned to read bottom to top.
    strip = np.full((cell * columns, column_height, 3), 255, np.uint8)
    for j, label in enumerate(column_labels):
        (_, h), _ = cv2.getTextSize(str(label), font, scale, 1)
        y = j * cell + (cell + h) // 2
        cv2.putText(strip, str(label), (8, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    turned = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    image[top - column_height - 4 : top - 4, left : left + columns * cell] = turned
    cv2.putText(image, row_title, (6, 18), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, column_title, (left, 18), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    if not cv2.imwrite(str(path), image):
        raise DataError(f"{path}: OpenCV could not write the image")
    return path
