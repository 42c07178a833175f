"""The toy task family "ball to target": a seeded generator and a programmatic checker (files.py writes and
reads them in the VBVR layout).

The family (fixed, so that anyone can generate more instances):
- 128x128 RGB frames, white background, 17 frames.
- A yellow ball: filled disc of radius 6 px, RGB (255, 200, 0). A pixel belongs to the disc when its
  centre lies within 6 px of the ball's centre (continuous coordinates: pixel (row i, column j) covers
  [j, j+1) x [i, i+1)).
- A red target: filled 16x16 square, RGB (220, 30, 30), at an integer position.
- 0, 1 or 2 obstacles: black X marks in a 13x13 box, two diagonal strokes 2 px wide (pixels whose
  centre lies within 1 px of a diagonal of the box).
- First frame: no two shapes overlap, their bounding boxes are at least 6 px apart, every shape lies at
  least 4 px inside the frame, and the ball's centre is at least 40 px (L1) from the target's centre.
- Instruction: "Move the yellow ball to the red square." plus " Do not touch the black X marks." when
  there are obstacles.
- Ground truth: the ball moves at constant speed along a path that keeps its disc at least 3 px away
  from every obstacle box and ends at the target's centre; everything else is still. The ball is drawn
  over the target.

Sampling (documented choices, all from `numpy.random.default_rng(SeedSequence([seed, index]))`):
- obstacle count uniform over {0, 1, 2};
- each obstacle is "in the way" with probability 0.7 (centred at a uniform fraction 0.3-0.7 along the
  ball-to-target segment, offset up to 8 px across it) and anywhere otherwise; layouts breaking a rule
  above are redrawn.

Planner (deterministic): the straight segment from the start to the target's centre when it keeps the
clearance; otherwise the single waypoint on a 2 px grid that gives the shortest two-segment path with the
clearance (ties: the first in row-major order). An instance with no such path is redrawn.

Checker: a video succeeds iff (1) in the last frame the ball's centroid lies inside the target square,
(2) in no frame does a ball pixel lie inside an obstacle's 13x13 box, and (3) in every frame the ball's
pixel area is within 50-150% of its area in the first frame. Ball pixels: R > 200, 140 < G < 245,
B < 110. Videos of another size are resized to 128x128 (nearest neighbour) first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

SIZE = 128
FRAMES = 17
BALL_RADIUS = 6
BALL_RGB = (255, 200, 0)
TARGET_SIZE = 16
TARGET_RGB = (220, 30, 30)
X_SIZE = 13
X_HALF_STROKE = 1.0          # 2 px strokes
X_RGB = (0, 0, 0)
MIN_GAP = 6                  # between bounding boxes in the first frame
BORDER = 4                   # shapes stay this far inside the frame
MIN_L1 = 40                  # ball centre to target centre
CLEARANCE = 3.0              # ground-truth path: ball disc to obstacle box
IN_THE_WAY = 0.7             # probability that an obstacle is placed across the direct path
WAYPOINT_GRID = 2
AREA_RANGE = (0.5, 1.5)
TASK_NAME = "ball_to_target_data-generator"
INSTRUCTION = "Move the yellow ball to the red square."
AVOID_INSTRUCTION = " Do not touch the black X marks."
FPS = 16
GENERATOR_VERSION = "toy-world-1"
RULES = ("goal", "obstacles", "size")


def instruction_for(num_obstacles: int) -> str:
    return INSTRUCTION + (AVOID_INSTRUCTION if num_obstacles else "")


# ------------------------------------------------------------------------------------------- instances


@dataclass
class Instance:
    """One task: where everything is in the first frame, and the ground-truth path of the ball."""
    seed: int
    index: int
    ball: tuple[float, float]                  # centre (x, y) in the first frame
    target: tuple[int, int]                    # top-left (x, y) of the 16x16 square
    obstacles: list[tuple[int, int]]           # top-left (x, y) of each 13x13 X box
    waypoints: list[tuple[float, float]] = field(default_factory=list)  # path corners, start and end included

    @property
    def instruction(self) -> str:
        return instruction_for(len(self.obstacles))

    @property
    def target_centre(self) -> tuple[float, float]:
        return (self.target[0] + TARGET_SIZE / 2, self.target[1] + TARGET_SIZE / 2)

    def centres(self) -> np.ndarray:
        """[FRAMES, 2] ball centres (x, y) of the ground truth: constant speed along the waypoints."""
        return positions_along(self.waypoints, FRAMES)

    def metadata(self) -> dict:
        d = asdict(self)
        d.update(version=GENERATOR_VERSION, task=TASK_NAME, instruction=self.instruction, size=SIZE, frames=FRAMES,
                 ball_radius=BALL_RADIUS, target_size=TARGET_SIZE, obstacle_size=X_SIZE,
                 ball_centres=[[round(float(v), 4) for v in c] for c in self.centres()])
        return d

    @classmethod
    def from_metadata(cls, d: dict) -> "Instance":
        try:
            return cls(int(d["seed"]), int(d["index"]), tuple(d["ball"]), tuple(d["target"]),
                       [tuple(o) for o in d["obstacles"]], [tuple(w) for w in d.get("waypoints", [])])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"Not a toy-world metadata record (needs seed, index, ball, target, obstacles): {e}")


def positions_along(waypoints: Sequence[Sequence[float]], frames: int) -> np.ndarray:
    """Points at equal arc-length steps along a polyline, first and last included."""
    pts = np.asarray(waypoints, dtype=np.float64)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0.0, cum[-1], frames)
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=1)


def _box_gap(a, b) -> float:
    """Gap between two axis-aligned boxes (x0, y0, x1, y1): the larger of the x and y separations."""
    gx = max(b[0] - a[2], a[0] - b[2])
    gy = max(b[1] - a[3], a[1] - b[3])
    return max(gx, gy)


def _boxes(ball, target, obstacles) -> list[tuple]:
    r = BALL_RADIUS
    out = [(ball[0] - r, ball[1] - r, ball[0] + r, ball[1] + r),
           (target[0], target[1], target[0] + TARGET_SIZE, target[1] + TARGET_SIZE)]
    out += [(o[0], o[1], o[0] + X_SIZE, o[1] + X_SIZE) for o in obstacles]
    return out


def layout_ok(ball, target, obstacles) -> bool:
    """The first-frame rules: inside the frame, boxes >= 6 px apart, ball >= 40 px (L1) from the target."""
    boxes = _boxes(ball, target, obstacles)
    if any(b[0] < BORDER or b[1] < BORDER or b[2] > SIZE - BORDER or b[3] > SIZE - BORDER for b in boxes):
        return False
    if any(_box_gap(boxes[i], boxes[j]) < MIN_GAP for i in range(len(boxes)) for j in range(i + 1, len(boxes))):
        return False
    tc = (target[0] + TARGET_SIZE / 2, target[1] + TARGET_SIZE / 2)
    return abs(ball[0] - tc[0]) + abs(ball[1] - tc[1]) >= MIN_L1


def distance_to_boxes(points: np.ndarray, obstacles) -> np.ndarray:
    """[..., 2] points -> distance to the nearest obstacle box (0 inside one); inf without obstacles."""
    best = np.full(points.shape[:-1], np.inf)
    for ox, oy in obstacles:
        dx = np.maximum(np.maximum(ox - points[..., 0], points[..., 0] - (ox + X_SIZE)), 0.0)
        dy = np.maximum(np.maximum(oy - points[..., 1], points[..., 1] - (oy + X_SIZE)), 0.0)
        best = np.minimum(best, np.hypot(dx, dy))
    return best


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from point(s) p to segments a-b (all broadcast over leading dimensions)."""
    d = b - a
    u = np.clip(((p - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(a + u[..., None] * d - p, axis=-1)


def _segments_clear(starts: np.ndarray, end: np.ndarray, obstacles) -> np.ndarray:
    """[N, 2] starts to one end point: True where the whole segment keeps the ball's clearance.

    Segment-to-box distance, exactly: 0 when the segment enters the box (tested on the box inflated by
    the clearance, which is the same condition), else the least of endpoint-to-box and corner-to-segment.
    """
    need = BALL_RADIUS + CLEARANCE
    end = np.broadcast_to(end, starts.shape)
    ok = np.ones(len(starts), bool)
    for ox, oy in obstacles:
        corners = np.array([[ox, oy], [ox + X_SIZE, oy], [ox, oy + X_SIZE], [ox + X_SIZE, oy + X_SIZE]], float)
        dist = np.minimum(distance_to_boxes(starts, [(ox, oy)]), distance_to_boxes(end, [(ox, oy)]))
        for c in corners:
            dist = np.minimum(dist, _point_segment_distance(c, starts, end))
        ok &= (dist >= need) & ~_crosses_box(starts, end, (ox, oy))
    return ok


def _crosses_box(a: np.ndarray, b: np.ndarray, top_left) -> np.ndarray:
    """Whether segments a-b pass through the box's interior (slab test)."""
    lo = np.asarray(top_left, float)
    hi = lo + X_SIZE
    d = b - a
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - a) / d, (hi - a) / d
    t_near = np.where(d == 0, np.where((a >= lo) & (a <= hi), -np.inf, np.inf), np.minimum(t1, t2)).max(-1)
    t_far = np.where(d == 0, np.where((a >= lo) & (a <= hi), np.inf, -np.inf), np.maximum(t1, t2)).min(-1)
    return (t_near <= t_far) & (t_far >= 0) & (t_near <= 1)


def plan_path(ball, target_centre, obstacles) -> list[tuple[float, float]] | None:
    """Straight when clear, else the shortest one-waypoint detour on a 2 px grid; None if neither exists."""
    start, end = np.asarray(ball, float), np.asarray(target_centre, float)
    a, b = (float(start[0]), float(start[1])), (float(end[0]), float(end[1]))
    if _segments_clear(start[None], end, obstacles)[0]:
        return [a, b]
    lo, hi = BORDER + BALL_RADIUS, SIZE - BORDER - BALL_RADIUS
    grid = np.arange(lo, hi + 1e-9, WAYPOINT_GRID, dtype=float)
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    cand = np.stack([xs.ravel(), ys.ravel()], axis=1)
    ok = _segments_clear(cand, start, obstacles) & _segments_clear(cand, end, obstacles)
    if not ok.any():
        return None
    length = np.linalg.norm(cand - start, axis=1) + np.linalg.norm(cand - end, axis=1)
    length[~ok] = np.inf
    w = cand[int(np.argmin(length))]
    return [a, (float(w[0]), float(w[1])), b]


def _obstacle_in_the_way(rng, ball, target_centre):
    u = rng.uniform(0.3, 0.7)
    b, t = np.asarray(ball), np.asarray(target_centre)
    d = t - b
    normal = np.array([-d[1], d[0]]) / np.linalg.norm(d)
    c = b + u * d + normal * rng.uniform(-8, 8)
    return (int(round(c[0] - X_SIZE / 2)), int(round(c[1] - X_SIZE / 2)))


def generate_instance(seed: int, index: int) -> Instance:
    """Instance `index` of the stream `seed` (independent of how many others are generated)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    r = BALL_RADIUS
    while True:
        ball = (float(rng.integers(BORDER + r, SIZE - BORDER - r + 1)),
                float(rng.integers(BORDER + r, SIZE - BORDER - r + 1)))
        target = (int(rng.integers(BORDER, SIZE - BORDER - TARGET_SIZE + 1)),
                  int(rng.integers(BORDER, SIZE - BORDER - TARGET_SIZE + 1)))
        if not layout_ok(ball, target, []):
            continue
        tc = (target[0] + TARGET_SIZE / 2, target[1] + TARGET_SIZE / 2)
        obstacles = []
        for _ in range(int(rng.integers(0, 3))):
            for _attempt in range(20):
                if rng.random() < IN_THE_WAY:
                    o = _obstacle_in_the_way(rng, ball, tc)
                else:
                    o = (int(rng.integers(BORDER, SIZE - BORDER - X_SIZE + 1)),
                         int(rng.integers(BORDER, SIZE - BORDER - X_SIZE + 1)))
                if layout_ok(ball, target, obstacles + [o]):
                    obstacles.append(o)
                    break
        path = plan_path(ball, tc, obstacles)
        if path is not None:
            return Instance(int(seed), int(index), ball, target, obstacles, path)


# ------------------------------------------------------------------------------------------- rendering

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE] + 0.5   # pixel centres


def disc_mask(centre, radius: float = BALL_RADIUS) -> np.ndarray:
    return (_XX - centre[0]) ** 2 + (_YY - centre[1]) ** 2 <= radius ** 2


def x_mark_mask(top_left) -> np.ndarray:
    """Pixels of an X in the 13x13 box at top_left: centres within 1 px of either diagonal."""
    u, v = _XX - top_left[0], _YY - top_left[1]
    inside = (u >= 0) & (u < X_SIZE) & (v >= 0) & (v < X_SIZE)
    on_diag = (np.abs(u - v) / math.sqrt(2) <= X_HALF_STROKE) | (np.abs(u + v - X_SIZE) / math.sqrt(2) <= X_HALF_STROKE)
    return inside & on_diag


def render_background(instance: Instance) -> np.ndarray:
    """The still scene (target and X marks) without the ball: uint8 [H, W, 3]."""
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    tx, ty = instance.target
    img[ty:ty + TARGET_SIZE, tx:tx + TARGET_SIZE] = TARGET_RGB
    for o in instance.obstacles:
        img[x_mark_mask(o)] = X_RGB
    return img


def render_video(instance: Instance, centres: np.ndarray | None = None, radii: Sequence[float] | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: the still scene with the ball drawn at each centre (default: ground truth).
    `radii` (one per frame) draws a ball of another size, e.g. for hand-made violations."""
    centres = instance.centres() if centres is None else np.asarray(centres, float)
    background = render_background(instance)
    frames = np.repeat(background[None], len(centres), axis=0)
    for t, c in enumerate(centres):
        frames[t][disc_mask(c, BALL_RADIUS if radii is None else radii[t])] = BALL_RGB
    return frames


def first_frame(instance: Instance) -> np.ndarray:
    """uint8 [H, W, 3]: the instance's first frame, as first_frame.png holds it."""
    return render_video(instance, [instance.ball])[0]


def obstacle_boxes(instance: Instance) -> np.ndarray:
    """bool [H, W]: the marks' 13 x 13 boxes, which the ball must never touch."""
    boxes = np.zeros((SIZE, SIZE), bool)
    for ox, oy in instance.obstacles:
        boxes[oy:oy + X_SIZE, ox:ox + X_SIZE] = True
    return boxes


def target_box(instance: Instance) -> np.ndarray:
    """bool [H, W]: the first frame's 16 x 16 square, where the ball must end."""
    box = np.zeros((SIZE, SIZE), bool)
    tx, ty = instance.target
    box[ty:ty + TARGET_SIZE, tx:tx + TARGET_SIZE] = True
    return box


# ------------------------------------------------------------------------------------------- checker


def resize_nearest(frames: np.ndarray, size: int = SIZE) -> np.ndarray:
    """[T, H, W, C] -> [T, size, size, C], nearest neighbour on pixel centres (source = floor((i+0.5)*H/size))."""
    t, h, w = frames.shape[:3]
    if (h, w) == (size, size):
        return frames
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(int), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(int), w - 1)
    return frames[:, rows][:, :, cols]


def ball_pixels(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 -> bool [T, H, W]: R > 200, 140 < G < 245, B < 110."""
    f = frames.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (r > 200) & (g > 140) & (g < 245) & (b < 110)


def square_pixels(frames: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 -> bool [...]: the red square's colour (not part of the checker, which judges against the
    first frame's square; for seeing where a video drew it)."""
    f = frames.astype(np.int16)
    return (f[..., 0] > 150) & (f[..., 1] < 100) & (f[..., 2] < 100)


@dataclass
class Verdict:
    success: bool
    goal: bool                     # rule 1: last-frame centroid inside the target
    obstacles: bool                # rule 2: no ball pixel in an obstacle box, in any frame
    size: bool                     # rule 3: area within 50-150% of the first frame's, in every frame
    final_centroid: tuple[float, float] | None
    areas: list[int]
    touching_frames: list[int]

    def failed_rules(self) -> list[str]:
        return [r for r in RULES if not getattr(self, r)]

    def to_dict(self) -> dict:
        return asdict(self)


def inside_target(point, target) -> bool:
    """Rule 1's geometry: the point lies in the square at top-left `target`, edges included."""
    tx, ty = target
    return bool(tx <= point[0] <= tx + TARGET_SIZE and ty <= point[1] <= ty + TARGET_SIZE)


def ball_centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of a frame's ball pixels' centroid in continuous coordinates, None without ball pixels."""
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    return (float(xs.mean() + 0.5), float(ys.mean() + 0.5))


def check_video(frames: np.ndarray, instance: Instance) -> Verdict:
    """Score one video (uint8 [T, H, W, 3], any size) against its instance's positions."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"A video must be uint8 [frames, height, width, 3]; got {frames.shape}.")
    mask = ball_pixels(resize_nearest(frames))
    areas = mask.sum(axis=(1, 2))
    centroid = ball_centroid(mask[-1])
    goal = centroid is not None and inside_target(centroid, instance.target)
    touching = [int(t) for t in np.nonzero((mask & obstacle_boxes(instance)).any(axis=(1, 2)))[0]]
    lo, hi = AREA_RANGE[0] * areas[0], AREA_RANGE[1] * areas[0]
    size_ok = bool(areas[0] > 0 and ((areas >= lo) & (areas <= hi)).all())
    return Verdict(goal and not touching and size_ok, goal, not touching, size_ok, centroid,
                   [int(a) for a in areas], touching)


def rule_margins(frames: np.ndarray, instance: Instance) -> dict[str, float]:
    """How clearly a video keeps each rule, signed like the checker's verdict (>= 0 iff the rule holds), in
    pixels: the last-frame centroid's depth inside the square; the ball's nearest pixel's (Chebyshev) distance
    from a mark's box, or minus the square root of the pixels inside one; the area ratio's distance from
    50-150% of frame 0's, 0.05 to a pixel. Soft labels for the teacher: how far from flipping each answer is."""
    mask = ball_pixels(resize_nearest(np.asarray(frames)))
    areas = mask.sum(axis=(1, 2))
    out = {"goal": -float(TARGET_SIZE)}
    centroid = ball_centroid(mask[-1])
    if centroid is not None:
        (cx, cy), (tx, ty) = centroid, instance.target
        out["goal"] = float(min(cx - tx, tx + TARGET_SIZE - cx, cy - ty, ty + TARGET_SIZE - cy))
    _, ys, xs = np.nonzero(mask)
    inside = int((mask & obstacle_boxes(instance)).sum())
    if inside:
        out["obstacles"] = -math.sqrt(inside)
    else:
        gaps = [np.maximum(np.maximum(ox - xs, xs - (ox + X_SIZE - 1)), np.maximum(oy - ys, ys - (oy + X_SIZE - 1)))
                for ox, oy in instance.obstacles]
        out["obstacles"] = float(min((g.min() for g in gaps if g.size), default=SIZE))
    if areas[0] > 0:
        ratio = areas / areas[0]
        out["size"] = float(min((ratio - AREA_RANGE[0]).min(), (AREA_RANGE[1] - ratio).min()) / 0.05)
    else:
        out["size"] = -10.0
    return out


def tally(verdicts) -> dict:
    """How many verdicts pass, and how many fail each rule."""
    verdicts = list(verdicts)
    return {"passed": sum(v.success for v in verdicts),
            "failures": {r: sum(not getattr(v, r) for v in verdicts) for r in RULES}}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
