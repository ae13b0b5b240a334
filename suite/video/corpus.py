"""The embedded video corpus: motion-capture actions rendered on pybullet's humanoid.

The 15 DeepMimic clips that ship with PyPI `pybullet` (`pybullet_data/data/motions/
humanoid3d_*.txt`) are played back kinematically on `humanoid/humanoid.urdf`, frames
mapped to joints exactly as `pybullet_envs/deep_mimic` does (`HumanoidPoseInterpolator.Slerp`
and `HumanoidStablePD.computePose`: Y-up world, looping clips advance by their cycle
offset). Each clip is rendered on the CPU with `ER_TINY_RENDERER` under a random camera
(yaw, pitch, distance, field of view, how closely it pans after the figure), figure colours,
light, floor (checker, texture, plain colour or none), background (plain colour, procedural
texture, a photograph, or a cluttered scene of 3-D objects in front of a photo collage,
composited with the segmentation mask), playback speed, frame rate, start phase, mirroring
and colour jitter including greyscale. The photographs and floor textures are the image
files that ship inside `pybullet_data`.

Splits hold out camera views: yaw is drawn from per-split sectors repeated every 90 degrees,
so every action is seen from the test views only in the test split (`VIEW_SECTORS`).

Layout under the corpus root: `{split}/{label}/{clip_id}.mp4` (MPEG-4 part 2, `mp4v`, which
this opencv-python-headless build writes and reads back), a `{clip_id}.json` sidecar per clip
(its manifest row; present only once the video is complete, so interrupted runs resume),
and `{split}/manifest.csv` with the label and every render parameter.

Speed, measured on this machine (2 CPU cores shared with other jobs, load average ~4):
3.7 clips/s in one process for clips of 32 frames at 112x112, video encode included
(~10 ms a frame in the tiny renderer); 2 workers were no faster under that load, and should
be nearly twice as fast on idle cores; on idle cores, 2 workers rendered 900 clips in
2 min 50 s (5.3 clips/s). The default corpus (15 actions x 120 clips) takes about 6 minutes;
a cached call returns at once. With workers > 1 the pool uses `spawn`, so
a script that calls `prepare_corpus` must do so under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import atexit
import csv
import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from shared.config import data_dir
from shared.errors import DataError

ACTIONS = (
    "walk",
    "run",
    "jump",
    "backflip",
    "cartwheel",
    "crawl",
    "dance_a",
    "dance_b",
    "getup_facedown",
    "getup_faceup",
    "kick",
    "punch",
    "roll",
    "spin",
    "spinkick",
)
SPLITS = ("train", "valid", "test")
DEFAULT_CLIPS_PER_ACTION = {"train": 40, "valid": 8, "test": 12}
# Bump when rendering changes, so that cached clips are rendered again.
RENDER_VERSION = 1
VIDEO_SUFFIX = ".mp4"
VIDEO_FOURCC = "mp4v"

# Yaw offsets (degrees) from each of the four cardinal yaws 0, 90, 180 and 270. Train sees
# the views near the axes and near the diagonals; valid and test the two views in between,
# mirror images of each other; 1-degree gaps keep every pair of splits apart.
VIEW_SECTORS = {
    "train": ((-14.0, 14.0), (31.0, 44.0), (-44.0, -31.0)),
    "valid": ((-29.0, -16.0),),
    "test": ((16.0, 29.0),),
}

# Colour names used for the figure, the floor and plain backgrounds (RGB 0-255).
PALETTE = {
    "red": (200, 30, 30),
    "orange": (240, 130, 20),
    "yellow": (235, 210, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 200),
    "purple": (130, 50, 170),
    "pink": (240, 130, 180),
    "white": (235, 235, 235),
    "black": (30, 30, 30),
    "grey": (128, 128, 128),
    "brown": (120, 75, 40),
    "cyan": (40, 190, 210),
}
# Image files inside pybullet_data: photographs and photo textures.
PHOTOS = {
    "motor": "quadruped/t-motor.jpg",
    "wheel": "racecar/meshes/wheel.jpg",
    "tray": "tray/tray.jpg",
    "wood": "table/table.png",
    "grass": "roboschool/models_outdoor/stadium/stadium_grass.jpg",
    "terrain": "heightmaps/gimp_overlay_out.png",
    "clouds": "heightmaps/wm_height_out.png",
    "blocks": "jenga/jenga.png",
    "dominoes": "domino/domino.jpg",
    "uvmap": "uvmap.png",
    "duck": "duckCM.png",
}
FLOOR_PHOTOS = ("grass", "wood", "tray", "terrain", "clouds", "blocks")
TEXTURE_KINDS = ("stripes", "checks", "noise", "gradient")
FLOOR_KINDS = ("checker", "texture", "plain", "none")
BACKGROUND_KINDS = ("plain", "texture", "image", "clutter")
DIRECTIONS = ("towards", "away", "left", "right", "in_place")
# Below this horizontal displacement over a clip (metres) the figure stays in place.
IN_PLACE_METRES = 0.5

# DeepMimic frame layout -> humanoid joint: (joint index, first column, degrees of freedom).
# Quaternions are stored w, x, y, z in the file and x, y, z, w in pybullet.
_JOINTS = (
    (1, 8, 4),  # chest
    (2, 12, 4),  # neck
    (3, 16, 4),  # right hip
    (4, 20, 1),  # right knee
    (5, 21, 4),  # right ankle
    (6, 25, 4),  # right shoulder
    (7, 29, 1),  # right elbow
    (9, 30, 4),  # left hip
    (10, 34, 1),  # left knee
    (11, 35, 4),  # left ankle
    (12, 39, 4),  # left shoulder
    (13, 43, 1),  # left elbow
)
_UPPER_LINKS = (1, 2, 6, 7, 8, 12, 13, 14)  # chest, head, arms
_LOWER_LINKS = (-1, 3, 4, 5, 9, 10, 11)  # pelvis, legs
_PARKED = (0.0, -1000.0, 0.0)  # far below the far clipping plane: out of every view
_CLUTTER_POOL = 14
_NEAR, _FAR = 0.05, 60.0


def _pybullet():
    try:
        import pybullet
        import pybullet_data
    except ImportError:
        raise DataError(
            "the embedded video corpus needs pybullet: `pip install pybullet`"
        ) from None
    return pybullet, pybullet_data


def motion_path(label: str) -> Path:
    """The DeepMimic motion file of one action."""
    if label not in ACTIONS:
        raise DataError(f"unknown action {label!r}; have {', '.join(ACTIONS)}")
    _, pybullet_data = _pybullet()
    path = Path(pybullet_data.getDataPath()) / "data" / "motions" / f"humanoid3d_{label}.txt"
    if not path.is_file():
        raise DataError(f"{path}: motion file missing from the installed pybullet")
    return path


@dataclass(frozen=True)
class Motion:
    """A DeepMimic motion: keyframes [N, 44] sampled at a fixed keyframe duration."""

    label: str
    frames: np.ndarray
    loop: bool

    @property
    def keyframe_duration(self) -> float:
        return float(self.frames[0, 0])

    @property
    def cycle_time(self) -> float:
        return self.keyframe_duration * (len(self.frames) - 1)

    @property
    def cycle_offset(self) -> np.ndarray:
        return self.frames[-1, 1:4] - self.frames[0, 1:4]

    def pose(self, time: float):
        """(root position, root quaternion xyzw, joint positions) at `time` seconds.

        Looping motions repeat and advance by their cycle offset; the others hold their
        last frame (pybullet's DeepMimic env loops those too, but a get-up that jumps back
        to the floor is no get-up).
        """
        cycle = self.cycle_time
        if self.loop:
            count = math.floor(time / cycle)
            frame_time = time - count * cycle
        else:
            count, frame_time = 0, min(max(time, 0.0), cycle)
        index = min(int(frame_time / self.keyframe_duration), len(self.frames) - 1)
        following = min(index + 1, len(self.frames) - 1)
        fraction = (frame_time - index * self.keyframe_duration) / self.keyframe_duration
        start, end = self.frames[index], self.frames[following]
        position = start[1:4] + fraction * (end[1:4] - start[1:4]) + count * self.cycle_offset
        orientation = _slerp(_xyzw(start, 4), _xyzw(end, 4), fraction)
        joints = []
        for _, column, dofs in _JOINTS:
            if dofs == 4:
                joints.append(_slerp(_xyzw(start, column), _xyzw(end, column), fraction))
            else:
                joints.append([start[column] + fraction * (end[column] - start[column])])
        return position, orientation, joints

    def root_position(self, time: float) -> np.ndarray:
        return self.pose(time)[0]


def _xyzw(frame: np.ndarray, column: int) -> list[float]:
    return [frame[column + 1], frame[column + 2], frame[column + 3], frame[column]]


def _slerp(start, end, fraction: float) -> list[float]:
    """Bullet's `btQuaternion::slerp` (shortest path), as `getQuaternionSlerp` computes it."""
    q0, q1 = np.asarray(start, float), np.asarray(end, float)
    magnitude = math.sqrt(float(q0 @ q0) * float(q1 @ q1))
    product = float(q0 @ q1) / magnitude
    if abs(product) >= 1.0 - 1e-7:
        return q0.tolist()
    theta = math.acos(abs(product))
    sign = -1.0 if product < 0 else 1.0
    d = math.sin(theta)
    s0 = math.sin((1.0 - fraction) * theta) / d
    s1 = math.sin(sign * fraction * theta) / d
    return (q0 * s0 + q1 * s1).tolist()


@functools.cache
def load_motion(label: str) -> Motion:
    """Reads one action's motion file."""
    path = motion_path(label)
    try:
        data = json.loads(path.read_text())
        frames = np.asarray(data["Frames"], dtype=np.float64)
    except (ValueError, KeyError) as error:
        raise DataError(f"{path}: not a DeepMimic motion ({error})") from None
    if frames.ndim != 2 or frames.shape[1] != 44 or len(frames) < 2:
        raise DataError(f"{path}: expected [frames, 44] keyframes, got {frames.shape}")
    return Motion(label, frames, str(data.get("Loop", "wrap")).lower() == "wrap")


@dataclass(frozen=True)
class RenderParams:
    """Everything that determines one clip; the same params always render the same video."""

    label: str
    split: str
    index: int
    seed: int
    num_frames: int
    width: int
    height: int
    fps: int
    speed: float  # motion seconds per video second
    phase: float  # start, as a fraction of the motion's cycle
    yaw: float  # degrees, pybullet's yaw about the up (y) axis
    pitch: float  # degrees; negative looks down on the figure
    distance: float  # camera to target, metres
    fov: float  # vertical field of view, degrees
    follow: float  # 1 = the camera pans to keep the figure centred, 0 = fixed camera
    mirrored: bool
    upper_color: str
    lower_color: str
    floor: str
    floor_detail: str
    background: str
    background_detail: str
    clutter_objects: int
    light_azimuth: float
    light_elevation: float
    light_ambient: float
    light_diffuse: float
    light_specular: float
    shadow: bool
    brightness: float
    contrast: float
    saturation: float
    hue_shift: float  # degrees about the grey axis
    greyscale: bool
    scene_seed: int  # textures, clutter placement and collage

    def digest(self) -> str:
        text = json.dumps({"version": RENDER_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    @property
    def clip_id(self) -> str:
        return f"{self.label}_{self.index:04d}_{self.digest()}"

    @property
    def duration(self) -> float:
        """Video seconds."""
        return self.num_frames / self.fps

    def times(self) -> np.ndarray:
        """Motion time of every video frame."""
        motion = load_motion(self.label)
        start = self.phase * motion.cycle_time
        return start + np.arange(self.num_frames) * self.speed / self.fps


# Manifest columns after `path`: the render params, then what the render measured.
PARAM_FIELDS = tuple(field.name for field in fields(RenderParams))
MANIFEST_FIELDS = (
    "path",
    "clip_id",
    *PARAM_FIELDS,
    "direction",
    "displacement",
    "duration",
    "figure_fraction",
)
_FIELD_TYPES = {field.name: field.type for field in fields(RenderParams)}
_FIELD_TYPES.update(displacement="float", duration="float", figure_fraction="float")


def yaw_split(yaw: float) -> str | None:
    """Which split's camera views contain `yaw` (degrees); None for the gaps between them."""
    offset = (yaw + 45.0) % 90.0 - 45.0
    for split, sectors in VIEW_SECTORS.items():
        if any(low <= offset <= high for low, high in sectors):
            return split
    return None


def sample_params(
    label: str,
    split: str,
    index: int,
    seed: int = 0,
    num_frames: int = 32,
    size: int | tuple[int, int] = 112,
) -> RenderParams:
    """Draws the render parameters of clip `index` of `label` in `split`, reproducibly."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; have {', '.join(SPLITS)}")
    motion = load_motion(label)
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng([seed, SPLITS.index(split), ACTIONS.index(label), index])
    # Cycle through the split's sectors and the four quadrants so that views stay balanced.
    sectors = VIEW_SECTORS[split]
    low, high = sectors[index % len(sectors)]
    quadrant = (index // len(sectors)) % 4
    yaw = round((90.0 * quadrant + rng.uniform(low, high)) % 360.0, 2)
    fps = int(rng.choice([8, 10, 12, 15]))
    speed = round(float(rng.uniform(0.6, 1.5)), 3)
    if motion.loop:
        phase = float(rng.uniform(0.0, 1.0))
    else:
        # One-shot motions start early enough that the action itself is in the clip.
        covered = num_frames / fps * speed / motion.cycle_time
        phase = float(rng.uniform(0.0, max(0.0, min(0.3, 1.0 - covered))))
    colours = list(PALETTE)
    upper = str(rng.choice(colours))
    lower = upper if rng.random() < 0.35 else str(rng.choice([c for c in colours if c != upper]))
    others = [c for c in colours if c not in (upper, lower)]
    floor = str(rng.choice(FLOOR_KINDS))
    floor_detail = {
        "checker": "checker",
        "texture": str(rng.choice(FLOOR_PHOTOS + TEXTURE_KINDS)),
        "plain": str(rng.choice(others)),
        "none": "",
    }[floor]
    background = str(rng.choice(BACKGROUND_KINDS, p=[0.2, 0.25, 0.25, 0.3]))
    background_detail = {
        "plain": str(rng.choice(others)),
        "texture": str(rng.choice(TEXTURE_KINDS)),
        "image": str(rng.choice(list(PHOTOS))),
        "clutter": "collage",
    }[background]
    return RenderParams(
        label=label,
        split=split,
        index=index,
        seed=seed,
        num_frames=num_frames,
        width=width,
        height=height,
        fps=fps,
        speed=speed,
        phase=round(phase, 4),
        yaw=yaw,
        pitch=round(float(rng.uniform(-55.0, 10.0)), 2),
        distance=round(float(rng.uniform(2.2, 3.8)), 3),
        fov=round(float(rng.uniform(45.0, 60.0)), 2),
        follow=round(float(rng.uniform(0.6, 1.0)), 3),
        mirrored=bool(rng.random() < 0.5),
        upper_color=upper,
        lower_color=lower,
        floor=floor,
        floor_detail=floor_detail,
        background=background,
        background_detail=background_detail,
        clutter_objects=int(rng.integers(3, 9)) if background == "clutter" else 0,
        light_azimuth=round(float(rng.uniform(0.0, 360.0)), 2),
        light_elevation=round(float(rng.uniform(20.0, 80.0)), 2),
        light_ambient=round(float(rng.uniform(0.45, 0.7)), 3),
        light_diffuse=round(float(rng.uniform(0.3, 0.55)), 3),
        light_specular=round(float(rng.uniform(0.0, 0.2)), 3),
        shadow=bool(rng.random() < 0.5),
        brightness=round(float(rng.uniform(-25.0, 25.0)), 2),
        contrast=round(float(rng.uniform(0.8, 1.2)), 3),
        saturation=round(float(rng.uniform(0.7, 1.3)), 3),
        hue_shift=round(float(rng.uniform(-6.0, 6.0)), 2),
        greyscale=bool(rng.random() < 0.12),
        scene_seed=int(rng.integers(0, 2**31 - 1)),
    )


def camera_axes(yaw: float, pitch: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal unit vectors (forward, screen right) of pybullet's Y-up yaw/pitch camera."""
    # computeViewMatrixFromYawPitchRoll(upAxisIndex=1) looks along (sin yaw, ., cos yaw)
    # and its screen-right axis is (-cos yaw, 0, sin yaw); checked against the view matrix.
    radians = math.radians(yaw)
    forward = np.array([math.sin(radians), 0.0, math.cos(radians)])
    right = np.array([-math.cos(radians), 0.0, math.sin(radians)])
    return forward, right


def direction_of_motion(params: RenderParams) -> tuple[str, float]:
    """(direction relative to the camera, horizontal displacement in metres) over the clip.

    The direction is what the video shows: towards or away from the camera, or across the
    picture to the left or right (swapped by mirroring); `in_place` below `IN_PLACE_METRES`.
    """
    motion = load_motion(params.label)
    times = params.times()
    moved = motion.root_position(times[-1]) - motion.root_position(times[0])
    moved[1] = 0.0
    displacement = float(np.linalg.norm(moved))
    if displacement < IN_PLACE_METRES:
        return "in_place", displacement
    forward, right = camera_axes(params.yaw)
    along, across = float(moved @ forward), float(moved @ right)
    if abs(along) >= abs(across):
        return ("away" if along > 0 else "towards"), displacement
    if params.mirrored:
        across = -across
    return ("right" if across > 0 else "left"), displacement


@dataclass
class RenderedClip:
    """A rendered clip: RGB frames [T, H, W, 3] uint8, the figure's mask [T, H, W] and its row."""

    frames: np.ndarray
    figure_mask: np.ndarray
    row: dict


class Scene:
    """One pybullet DIRECT connection with the humanoid, a floor, textures and clutter bodies.

    A process keeps one scene and re-dresses it for every clip (`render`).
    """

    def __init__(self):
        pybullet, pybullet_data = _pybullet()
        from pybullet_utils.bullet_client import BulletClient

        self._p = pybullet
        self._data = Path(pybullet_data.getDataPath())
        self.client = BulletClient(connection_mode=pybullet.DIRECT)
        self.client.setAdditionalSearchPath(str(self._data))
        z2y = self.client.getQuaternionFromEuler([-math.pi * 0.5, 0, 0])
        self.plane = self.client.loadURDF("plane.urdf", [0, 0, 0], z2y, useMaximalCoordinates=True)
        self._plane_orientation = z2y
        self.humanoid = self.client.loadURDF(
            "humanoid/humanoid.urdf",
            [0, 0.889540259, 0],
            globalScaling=0.25,
            useFixedBase=True,
            flags=self.client.URDF_MAINTAIN_LINK_ORDER,
        )
        self._joint_indices = [joint for joint, _, _ in _JOINTS]
        self._links = list(range(self.client.getNumJoints(self.humanoid)))
        self._photos: dict[str, np.ndarray] = {}
        self._textures = self._load_textures()
        self._clutter = self._make_clutter_pool()

    # -- assets ---------------------------------------------------------------------------

    def photo(self, name: str) -> np.ndarray:
        """A photograph from pybullet_data as RGB, at most 512 pixels a side."""
        if name not in self._photos:
            import cv2

            path = self._data / PHOTOS[name]
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise DataError(f"{path}: cannot read the image from pybullet_data")
            scale = 512 / max(image.shape[:2])
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            self._photos[name] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return self._photos[name]

    def _load_textures(self) -> dict[str, int]:
        import cv2

        textures = {"checker": self.client.loadTexture(str(self._data / "checker_blue.png"))}
        for name in FLOOR_PHOTOS:
            textures[name] = self.client.loadTexture(str(self._data / PHOTOS[name]))
        # Procedural floor textures: fixed seeds, so every process draws the same ones.
        self._texture_dir = tempfile.TemporaryDirectory(prefix="rnnsuite-textures-")
        for number, kind in enumerate(TEXTURE_KINDS):
            rng = np.random.default_rng(1000 + number)
            image = procedural_texture(rng, kind, (256, 256))
            path = Path(self._texture_dir.name) / f"{kind}.png"
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            textures[kind] = self.client.loadTexture(str(path))
        return textures

    def _make_clutter_pool(self) -> list[tuple[int, float, float, list]]:
        """Bodies of assorted shapes, parked out of view: (body, radius, half height, orientation)."""
        c, p = self.client, self._p
        rng = np.random.default_rng(7)
        upright = list(c.getQuaternionFromEuler([-math.pi * 0.5, 0, 0]))
        level = [0.0, 0.0, 0.0, 1.0]
        pool = []
        for number in range(_CLUTTER_POOL):
            kind = number % 4
            if kind == 0:
                half = rng.uniform(0.15, 0.6, size=3)
                shape = c.createVisualShape(p.GEOM_BOX, halfExtents=half.tolist())
                radius, half_height, orientation = float(np.hypot(half[0], half[2])), half[1], level
            elif kind == 1:
                radius, length = rng.uniform(0.1, 0.45), rng.uniform(0.4, 1.8)
                shape = c.createVisualShape(p.GEOM_CYLINDER, radius=radius, length=length)
                half_height, orientation = length / 2, upright
            elif kind == 2:
                radius = rng.uniform(0.15, 0.5)
                shape = c.createVisualShape(p.GEOM_SPHERE, radius=radius)
                half_height, orientation = radius, level
            else:
                radius, length = rng.uniform(0.1, 0.3), rng.uniform(0.3, 1.2)
                shape = c.createVisualShape(p.GEOM_CAPSULE, radius=radius, length=length)
                half_height, orientation = length / 2 + radius, upright
            body = c.createMultiBody(0, -1, shape, _PARKED, orientation)
            pool.append((body, float(radius), float(half_height), orientation))
        return pool

    # -- one clip -------------------------------------------------------------------------

    def set_pose(self, motion: Motion, time: float) -> np.ndarray:
        position, orientation, joints = motion.pose(time)
        self.client.resetBasePositionAndOrientation(self.humanoid, position.tolist(), orientation)
        self.client.resetJointStatesMultiDof(self.humanoid, self._joint_indices, joints)
        return position

    def _link_positions(self) -> np.ndarray:
        states = self.client.getLinkStates(self.humanoid, self._links, computeForwardKinematics=1)
        base = self.client.getBasePositionAndOrientation(self.humanoid)[0]
        return np.array([base] + [state[0] for state in states])

    def _view(self, target, distance, yaw, pitch):
        return self.client.computeViewMatrixFromYawPitchRoll(
            list(map(float, target)), distance, yaw, pitch, 0, 1
        )

    def _projection(self, params: RenderParams, fov: float):
        return self.client.computeProjectionMatrixFOV(
            fov, params.width / params.height, _NEAR, _FAR
        )

    def _frame_camera(self, params: RenderParams):
        """Per frame: root position, camera target; and the target height and pan anchor."""
        motion = load_motion(params.label)
        times = params.times()
        roots = np.array([motion.root_position(t) for t in times])
        anchor = roots[len(roots) // 2].copy()
        height = float(np.clip(roots[:, 1].mean(), 0.4, 1.0))
        targets = anchor + params.follow * (roots - anchor)
        targets[:, 1] = height
        return times, roots, targets, height

    def fit_camera(self, params: RenderParams) -> RenderParams:
        """Moves the camera back (and the eye above the floor) until every link stays in view."""
        motion = load_motion(params.label)
        times, _, targets, height = self._frame_camera(params)
        links = []
        for time in times:
            self.set_pose(motion, time)
            links.append(self._link_positions())
        distance, pitch = params.distance, params.pitch
        for _ in range(12):
            # The eye must stay above the floor: low-angle views look up from 15 cm at least.
            highest = math.degrees(math.asin(min(1.0, max(-1.0, (height - 0.15) / distance))))
            pitch = min(pitch, highest)
            projection = np.array(self._projection(params, params.fov)).reshape(4, 4).T
            inside = True
            for target, points in zip(targets, links, strict=True):
                view = np.array(self._view(target, distance, params.yaw, pitch)).reshape(4, 4).T
                homogeneous = np.c_[points, np.ones(len(points))] @ (projection @ view).T
                ndc = homogeneous[:, :2] / np.maximum(homogeneous[:, 3:4], 1e-6)
                if (homogeneous[:, 3] <= _NEAR).any() or (np.abs(ndc) > 0.85).any():
                    inside = False
                    break
            if inside:
                break
            distance *= 1.2
        return replace(params, distance=round(distance, 3), pitch=round(pitch, 2))

    def _dress(self, params: RenderParams) -> None:
        c = self.client
        upper = [v / 255 for v in PALETTE[params.upper_color]] + [1.0]
        lower = [v / 255 for v in PALETTE[params.lower_color]] + [1.0]
        for link in _UPPER_LINKS:
            c.changeVisualShape(self.humanoid, link, rgbaColor=upper)
        for link in _LOWER_LINKS:
            c.changeVisualShape(self.humanoid, link, rgbaColor=lower)
        if params.floor == "none":
            c.resetBasePositionAndOrientation(self.plane, _PARKED, self._plane_orientation)
            return
        c.resetBasePositionAndOrientation(self.plane, [0, 0, 0], self._plane_orientation)
        if params.floor == "plain":
            colour = [v / 255 for v in PALETTE[params.floor_detail]] + [1.0]
            c.changeVisualShape(self.plane, -1, textureUniqueId=-1, rgbaColor=colour)
        else:
            texture = self._textures[params.floor_detail]
            c.changeVisualShape(self.plane, -1, textureUniqueId=texture, rgbaColor=[1, 1, 1, 1])

    def _place_clutter(self, params, rng, roots, eyes) -> int:
        """Puts up to `clutter_objects` bodies around the path; returns how many found room."""
        c = self.client
        for body, _, _, orientation in self._clutter:
            c.resetBasePositionAndOrientation(body, _PARKED, orientation)
        if not params.clutter_objects:
            return 0
        placed = 0
        centre = roots.mean(axis=0)
        chosen = rng.choice(len(self._clutter), size=params.clutter_objects, replace=False)
        flat_roots, flat_eyes = roots[:, [0, 2]], eyes[:, [0, 2]]
        textures = list(self._textures.values())
        for number in chosen:
            body, radius, half_height, base = self._clutter[number]
            for _ in range(30):
                angle, reach = rng.uniform(0, 2 * math.pi), rng.uniform(1.5, 7.0)
                spot = centre[[0, 2]] + reach * np.array([math.cos(angle), math.sin(angle)])
                # Keep clear of the figure's path and of every line of sight to it.
                clearance = radius + 0.7
                if np.linalg.norm(flat_roots - spot, axis=1).min() < clearance:
                    continue
                if _segment_distance(spot, flat_eyes, flat_roots).min() < clearance:
                    continue
                break
            else:
                continue
            spin = c.getQuaternionFromEuler([0, rng.uniform(0, 2 * math.pi), 0])
            orientation = c.multiplyTransforms([0, 0, 0], spin, [0, 0, 0], base)[1]
            c.resetBasePositionAndOrientation(body, [spot[0], half_height, spot[1]], orientation)
            colour = [v / 255 for v in PALETTE[str(rng.choice(list(PALETTE)))]] + [1.0]
            texture = int(rng.choice(textures)) if rng.random() < 0.4 else -1
            c.changeVisualShape(body, -1, rgbaColor=colour, textureUniqueId=texture)
            placed += 1
        return placed

    def _backdrop(self, params: RenderParams, rng: np.random.Generator) -> np.ndarray:
        size = (params.height, params.width)
        if params.background == "plain":
            return np.broadcast_to(
                np.array(PALETTE[params.background_detail], np.uint8), (*size, 3)
            ).copy()
        if params.background == "texture":
            return procedural_texture(rng, params.background_detail, size)
        if params.background == "image":
            return random_crop(rng, self.photo(params.background_detail), size)
        return photo_collage(rng, [self.photo(name) for name in PHOTOS], size)

    def render(self, params: RenderParams) -> RenderedClip:
        """Renders one clip (camera already fitted, see `fit_camera`)."""
        c, p = self.client, self._p
        rng = np.random.default_rng(params.scene_seed)
        motion = load_motion(params.label)
        times, roots, targets, _ = self._frame_camera(params)
        forward, _ = camera_axes(params.yaw)
        eyes = targets - params.distance * math.cos(math.radians(params.pitch)) * forward
        self._dress(params)
        placed = self._place_clutter(params, rng, roots, eyes)
        backdrop = self._backdrop(params, rng)
        elevation, azimuth = (
            math.radians(params.light_elevation),
            math.radians(params.light_azimuth),
        )
        light = [
            math.cos(elevation) * math.cos(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.sin(azimuth),
        ]
        projection = self._projection(params, params.fov)
        frames = np.empty((params.num_frames, params.height, params.width, 3), np.uint8)
        masks = np.empty((params.num_frames, params.height, params.width), bool)
        for number, (time, target) in enumerate(zip(times, targets, strict=True)):
            self.set_pose(motion, time)
            _, _, rgb, _, seg = c.getCameraImage(
                params.width,
                params.height,
                self._view(target, params.distance, params.yaw, params.pitch),
                projection,
                lightDirection=light,
                lightAmbientCoeff=params.light_ambient,
                lightDiffuseCoeff=params.light_diffuse,
                lightSpecularCoeff=params.light_specular,
                shadow=int(params.shadow),
                renderer=p.ER_TINY_RENDERER,
            )
            rgb = np.asarray(rgb, np.uint8).reshape(params.height, params.width, 4)[..., :3]
            seg = np.asarray(seg).reshape(params.height, params.width)
            frame = rgb.copy()
            empty = seg < 0
            frame[empty] = backdrop[empty]
            frames[number] = frame
            masks[number] = seg == self.humanoid
        if params.mirrored:
            frames, masks = frames[:, :, ::-1], masks[:, :, ::-1]
        frames = jitter_colours(
            frames,
            params.brightness,
            params.contrast,
            params.saturation,
            params.hue_shift,
            params.greyscale,
        )
        direction, displacement = direction_of_motion(params)
        row = {
            "clip_id": params.clip_id,
            **asdict(params),
            "clutter_objects": placed,
            "direction": direction,
            "displacement": round(displacement, 3),
            "duration": round(params.duration, 4),
            "figure_fraction": round(float(masks.mean()), 5),
        }
        return RenderedClip(np.ascontiguousarray(frames), np.ascontiguousarray(masks), row)


def _segment_distance(point: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Distances from a 2-D point to each segment starts[i]-ends[i]."""
    span = ends - starts
    length2 = np.maximum((span**2).sum(axis=1), 1e-9)
    t = np.clip(((point - starts) * span).sum(axis=1) / length2, 0.0, 1.0)
    return np.linalg.norm(starts + t[:, None] * span - point, axis=1)


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    names = rng.choice(list(PALETTE), size=2, replace=False)
    jitter = rng.normal(0, 12, size=(2, 3))
    a, b = (
        np.clip(np.array(PALETTE[n], float) + j, 0, 255) for n, j in zip(names, jitter, strict=True)
    )
    return a, b


def procedural_texture(rng: np.random.Generator, kind: str, size: tuple[int, int]) -> np.ndarray:
    """A random RGB texture of `kind` (stripes, checks, noise, gradient) and size (h, w)."""
    import cv2

    height, width = size
    a, b = _two_colours(rng)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    if kind == "stripes":
        period = rng.uniform(6, max(8, min(height, width) / 3))
        weight = ((u / period) % 1.0 < rng.uniform(0.3, 0.7)).astype(np.float32)
    elif kind == "checks":
        period = rng.uniform(6, max(8, min(height, width) / 3))
        weight = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "noise":
        cells = int(rng.integers(3, 12))
        coarse = rng.random((cells, cells)).astype(np.float32)
        weight = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        weight = np.clip((weight - weight.min()) / max(float(np.ptp(weight)), 1e-6), 0, 1)
    elif kind == "gradient":
        weight = (u - u.min()) / max(float(np.ptp(u)), 1e-6)
    else:
        raise DataError(f"unknown texture kind {kind!r}; have {', '.join(TEXTURE_KINDS)}")
    image = weight[..., None] * a + (1.0 - weight[..., None]) * b
    return np.clip(image, 0, 255).astype(np.uint8)


def random_crop(rng: np.random.Generator, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A random crop of `image` (30-100 % of its short side) resized to (h, w), maybe flipped."""
    import cv2

    height, width = size
    scale = min(image.shape[:2]) * rng.uniform(0.3, 1.0) / max(height, width)
    crop_h = max(4, min(image.shape[0], round(height * scale)))
    crop_w = max(4, min(image.shape[1], round(width * scale)))
    top = int(rng.integers(0, image.shape[0] - crop_h + 1))
    left = int(rng.integers(0, image.shape[1] - crop_w + 1))
    crop = image[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_AREA)


def photo_collage(
    rng: np.random.Generator, photos: list[np.ndarray], size: tuple[int, int]
) -> np.ndarray:
    """A cluttered backdrop: a photo crop with 3-6 smaller crops of other photos on top."""
    height, width = size
    canvas = random_crop(rng, photos[int(rng.integers(len(photos)))], size)
    for _ in range(int(rng.integers(3, 7))):
        h = int(height * rng.uniform(0.2, 0.6))
        w = int(width * rng.uniform(0.2, 0.6))
        patch = random_crop(rng, photos[int(rng.integers(len(photos)))], (h, w))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        canvas[top : top + h, left : left + w] = patch
    return canvas


def jitter_colours(
    frames: np.ndarray,
    brightness: float = 0.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue_shift: float = 0.0,
    greyscale: bool = False,
) -> np.ndarray:
    """One colour jitter for a whole clip [T, H, W, 3] uint8; greyscale keeps 3 channels.

    Pixel by pixel in float arithmetic (hue turns about the grey axis in YIQ space), so
    the result does not depend on where a pixel sits: a mirrored clip jitters the same.
    """
    rgb = frames.astype(np.float32)
    if hue_shift:
        angle = math.radians(hue_shift)
        to_yiq = np.array(
            [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
        )
        turn = np.array(
            [
                [1.0, 0.0, 0.0],
                [0.0, math.cos(angle), -math.sin(angle)],
                [0.0, math.sin(angle), math.cos(angle)],
            ],
            np.float32,
        )
        rgb = rgb @ (np.linalg.inv(to_yiq) @ turn @ to_yiq).T.astype(np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    rgb = grey[..., None] + saturation * (rgb - grey[..., None])
    rgb = (rgb - 128.0) * contrast + 128.0 + brightness
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if greyscale:
        luma = np.rint(out.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        out = np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return out


@functools.lru_cache(maxsize=1)
def _scene() -> Scene:
    # One scene per process: loading the humanoid and textures once is most of the set-up.
    # Dropped at exit, while pybullet is still whole: pybullet_utils' `__del__` fails (and
    # says so on stderr) when it runs during the interpreter's teardown.
    atexit.register(_scene.cache_clear)
    return Scene()


def render_clip(params: RenderParams) -> RenderedClip:
    """Fits the camera to the figure and renders one clip in this process's scene.

    The row holds the camera distance and pitch actually used (see `Scene.fit_camera`).
    """
    scene = _scene()
    clip = scene.render(scene.fit_camera(params))
    # The clip is known by what was asked for, not by the fitted camera: that is the cache key.
    clip.row["clip_id"] = params.clip_id
    return clip


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Writes RGB frames [T, H, W, 3] uint8 as a video OpenCV reads back (mp4v in .mp4)."""
    import cv2

    path = Path(path)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot write {VIDEO_FOURCC} video here")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def _clip_paths(root: Path, params: RenderParams) -> tuple[Path, Path]:
    folder = root / params.split / params.label
    return folder / f"{params.clip_id}{VIDEO_SUFFIX}", folder / f"{params.clip_id}.json"


def cached_row(root: Path, params: RenderParams) -> dict | None:
    """The manifest row of an already rendered clip, or None if it must be rendered."""
    video, sidecar = _clip_paths(root, params)
    if not (video.is_file() and sidecar.is_file()):
        return None
    try:
        row = json.loads(sidecar.read_text())
    except ValueError:
        return None
    return row if row.get("clip_id") == params.clip_id else None


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already: OpenCV's threads would only contend


def _render_to_disk(task: tuple[str, dict]) -> dict:
    """Worker: renders one clip and writes its video, then its sidecar (in that order)."""
    root, values = task
    params = RenderParams(**values)
    video, sidecar = _clip_paths(Path(root), params)
    video.parent.mkdir(parents=True, exist_ok=True)
    clip = render_clip(params)
    partial = video.with_name(f"{video.stem}.partial{VIDEO_SUFFIX}")
    write_video(partial, clip.frames, params.fps)
    os.replace(partial, video)
    row = {"path": f"{params.label}/{video.name}", **clip.row}
    partial_sidecar = sidecar.with_suffix(".json.partial")
    partial_sidecar.write_text(json.dumps(row, sort_keys=True))
    os.replace(partial_sidecar, sidecar)
    return row


def default_root() -> Path:
    """Where the embedded video corpus lives: `<data dir>/video/mocap`."""
    return data_dir() / "video" / "mocap"


def prepare_corpus(
    clips_per_action: int | Mapping[str, int] | None = None,
    seed: int = 0,
    workers: int = 2,
    root: str | Path | None = None,
    num_frames: int = 32,
    size: int | tuple[int, int] = 112,
    progress: bool = True,
    actions: Sequence[str] = ACTIONS,
) -> dict[str, Path]:
    """Renders (or finds cached) clips of every action and writes one manifest per split.

    Args:
        clips_per_action: clips of each action in each split: an int for every split, or
            {split: count}; default `DEFAULT_CLIPS_PER_ACTION`.
        seed: draws every clip's render parameters; the same seed gives the same corpus.
        workers: rendering processes; 1 renders in this process.
        root: corpus folder; default `default_root()`.
        num_frames: frames per clip.
        size: frame size, an int for square frames or (height, width).
        progress: show a tqdm progress bar.
        actions: which actions to render (all 15 by default).

    Returns:
        {split: path of its manifest.csv}. Rows hold `path` relative to the manifest's folder.
    """
    from tqdm.auto import tqdm

    counts = _split_counts(clips_per_action)
    unknown = [label for label in actions if label not in ACTIONS]
    if unknown:
        raise DataError(f"unknown actions {unknown}; have {', '.join(ACTIONS)}")
    root = Path(root) if root is not None else default_root()
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    tasks = []
    for split in SPLITS:
        for label in actions:
            for index in range(counts[split]):
                params = sample_params(label, split, index, seed, num_frames, size)
                row = cached_row(root, params)
                if row is None:
                    tasks.append((str(root), asdict(params)))
                else:
                    rows[split].append(row)
    bar = tqdm(
        total=len(tasks), desc="rendering video clips", unit="clip", disable=not progress or None
    )
    if tasks and workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: workers must not inherit a parent's TensorFlow threads or pybullet client.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(workers, len(tasks)), mp_context=context, initializer=_init_worker
        ) as pool:
            futures = [pool.submit(_render_to_disk, task) for task in tasks]
            for future in as_completed(futures):
                row = future.result()
                rows[row["split"]].append(row)
                bar.update()
    else:
        for task in tasks:
            row = _render_to_disk(task)
            rows[row["split"]].append(row)
            bar.update()
    bar.close()
    manifests = {}
    for split in SPLITS:
        order = {label: number for number, label in enumerate(ACTIONS)}
        ordered = sorted(rows[split], key=lambda row: (order[row["label"]], row["index"]))
        manifests[split] = write_manifest(root / split / "manifest.csv", ordered)
    return manifests


def _split_counts(clips_per_action) -> dict[str, int]:
    if clips_per_action is None:
        return dict(DEFAULT_CLIPS_PER_ACTION)
    if isinstance(clips_per_action, Mapping):
        unknown = set(clips_per_action) - set(SPLITS)
        if unknown:
            raise DataError(f"clips_per_action: unknown splits {sorted(unknown)}; have {SPLITS}")
        counts = {split: int(clips_per_action.get(split, 0)) for split in SPLITS}
    else:
        counts = dict.fromkeys(SPLITS, int(clips_per_action))
    if any(count < 0 for count in counts.values()):
        raise DataError(f"clips_per_action must not be negative, got {counts}")
    return counts


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """Writes rows as CSV with `MANIFEST_FIELDS` (atomically: a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".csv.partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _format(row[key]) for key in MANIFEST_FIELDS})
    os.replace(partial, path)
    return path


def _format(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def read_manifest(path: str | Path) -> list[dict]:
    """Reads a manifest back with typed values and `path` made absolute.

    Raises:
        DataError: naming the file (and line) for a missing file, column or bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in MANIFEST_FIELDS if name not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}: missing columns {', '.join(missing)}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {}
            for key, value in raw.items():
                try:
                    row[key] = _parse(_FIELD_TYPES.get(key, "str"), value)
                except ValueError:
                    raise DataError(f"{path}:{line}: bad value {value!r} for {key}") from None
            row["path"] = path.parent / row["path"]
            rows.append(row)
    return rows


def _parse(kind, value: str):
    kind = getattr(kind, "__name__", kind)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(value)
        return value.lower() in ("true", "1")
    return value
