"""Drawing Duel matches with OpenCV.

Two products:
  * ``gray_frames``: (M, 84, 84) uint8 frames for pixel agents, drawn from one fighter's point
    of view (itself bright, its opponent dimmer), with HP, cooldown and timer bars;
  * ``bgr_frame``: a larger colour frame (H, W, 3) uint8 in BGR order (as OpenCV writes video) for
    people and replays, with HP bars, cooldowns, the timer and player names.
Only this module knows pixels; the simulator knows metres.
"""

from __future__ import annotations

import cv2
import numpy as np

from bcarena.envs.duel.core import DuelCore

GRAY_SIZE = 84
_BODY_HEIGHT_M = 1.6

# Gray intensities (self, opponent): who is who must survive downsampling and frame stacking.
_GRAY_BODY = (255, 130)
_GRAY_ATTACK = (210, 100)
_GRAY_GUARD = 180


def gray_frames(core: DuelCore, player: np.ndarray | int, indices: np.ndarray | None = None) -> np.ndarray:
    """Frames (M, 84, 84) uint8 of matches ``indices`` (default all) seen by ``player`` (0/1 or per match)."""
    idx = np.arange(core.num_matches) if indices is None else np.asarray(indices).reshape(-1)
    viewer = np.broadcast_to(np.asarray(player), idx.shape)
    cfg = core.config
    size = GRAY_SIZE
    scale = (size - 4) / cfg.arena_width  # px per m
    floor = size - 12
    frames = np.zeros((idx.size, size, size), dtype=np.uint8)
    # Geometry for all fighters at once; the loop below only issues draw calls.
    xs = np.rint(2 + core.x[idx] * scale).astype(np.int32)
    tops = np.rint(floor - (core.y[idx] + _BODY_HEIGHT_M) * scale).astype(np.int32)
    half = max(1, int(round(cfg.body_width * scale / 2)))
    body_h = int(round(_BODY_HEIGHT_M * scale))
    hp = np.clip(core.hp[idx] / cfg.max_hp, 0, 1)
    cd_left = core.cooldown[idx] / np.maximum(core._cooldown_of, 1)
    move = core.move[idx]
    tick = core.move_tick[idx]
    active = (move > 0) & (tick >= core._startup[move]) & (tick < core._active_end[move])
    reach_px = np.rint(core._reach[move] * scale).astype(np.int32)
    facing = core.facing[idx].astype(np.int32)
    time_left = 1.0 - core.tick[idx] / cfg.round_ticks
    stunned = core.hitstun[idx] > 0
    guarding = core.guarding[idx]
    for m in range(idx.size):
        img = frames[m]
        me = int(viewer[m])
        cv2.line(img, (0, floor + 1), (size - 1, floor + 1), 60, 1)
        for p in (me, 1 - me):  # draw the opponent second so overlaps favour seeing it
            role = 0 if p == me else 1
            x, top = int(xs[m, p]), int(tops[m, p])
            height = body_h // 2 if stunned[m, p] else body_h
            cv2.rectangle(img, (x - half, top + body_h - height), (x + half, top + body_h), _GRAY_BODY[role], -1)
            if move[m, p]:
                tip = x + facing[m, p] * (reach_px[m, p] if active[m, p] else half + 2)
                arm_y = top + body_h // 3
                cv2.line(img, (x, arm_y), (int(tip), arm_y), _GRAY_ATTACK[role], 2 if active[m, p] else 1)
            if guarding[m, p]:
                gx = x + facing[m, p] * (half + 2)
                cv2.line(img, (int(gx), top), (int(gx), top + body_h), _GRAY_GUARD, 1)
            # HUD: own bars on the left half, the opponent's on the right half.
            x0 = 2 if role == 0 else size // 2 + 2
            width = size // 2 - 6
            cv2.rectangle(img, (x0, 2), (x0 + int(round(hp[m, p] * width)), 4), _GRAY_BODY[role], -1)
            for s in range(3):
                ready_w = int(round((1 - cd_left[m, p, s]) * (width // 3 - 1)))
                cx = x0 + s * (width // 3)
                cv2.rectangle(img, (cx, 7), (cx + ready_w, 8), _GRAY_BODY[role], -1)
        cv2.rectangle(img, (2, size - 4), (2 + int(round(time_left[m] * (size - 5))), size - 3), 90, -1)
    return frames


_BGR_COLORS = ((235, 140, 40), (60, 80, 230))  # player 0 blue-ish, player 1 red-ish
_SKILL_LABELS = ("L", "H", "S")


def bgr_frame(
    core: DuelCore, index: int, names: tuple[str, str] = ("P1", "P2"), width: int = 640, caption: str | None = None
) -> np.ndarray:
    """A colour frame (H, W, 3) uint8 BGR of match ``index`` for people: HUD, names and an optional caption."""
    cfg = core.config
    height = width * 9 // 16
    img = np.full((height, width, 3), (32, 28, 24), dtype=np.uint8)
    scale = (width - 40) / cfg.arena_width
    floor = height - 50
    cv2.rectangle(img, (0, floor), (width, height), (70, 70, 70), -1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    body_h = int(_BODY_HEIGHT_M * scale)
    half = int(cfg.body_width * scale / 2)
    for p in (0, 1):
        color = _BGR_COLORS[p]
        x = int(20 + core.x[index, p] * scale)
        base = int(floor - core.y[index, p] * scale)
        stunned = core.hitstun[index, p] > 0
        top = base - (body_h * 2 // 3 if stunned else body_h)
        body_color = tuple(int(c * 0.6) for c in color) if stunned else color
        cv2.rectangle(img, (x - half, top), (x + half, base), body_color, -1)
        cv2.circle(img, (x, top - 10), 9, body_color, -1)
        face = int(core.facing[index, p])
        move = int(core.move[index, p])
        if move:
            tick = int(core.move_tick[index, p])
            is_active = core._startup[move] <= tick < core._active_end[move]
            tip = x + face * (int(core._reach[move] * scale) if is_active else half + 8)
            arm_y = top + body_h // 4
            cv2.line(
                img, (x, arm_y), (tip, arm_y), (255, 255, 255) if is_active else (180, 180, 180), 6 if is_active else 3
            )
            if is_active:
                cv2.putText(
                    img, _SKILL_LABELS[move - 1], (tip + face * 6 - 6, arm_y - 8), font, 0.6, (255, 255, 255), 2
                )
        if core.guarding[index, p]:
            gx = x + face * (half + 6)
            cv2.line(img, (gx, top), (gx, base), (120, 230, 230), 4)
        # HUD
        bar_w = width // 2 - 60  # leaves the centre for the timer
        x0 = 20 if p == 0 else width // 2 + 40
        hp = max(0.0, float(core.hp[index, p])) / cfg.max_hp
        cv2.rectangle(img, (x0, 14), (x0 + bar_w, 30), (60, 60, 60), -1)
        hp_x = x0 + int(hp * bar_w) if p == 0 else x0 + bar_w - int(hp * bar_w)
        cv2.rectangle(img, (min(x0, hp_x) if p == 0 else hp_x, 14), (hp_x if p == 0 else x0 + bar_w, 30), color, -1)
        cv2.putText(
            img, f"{names[p]}  {max(0.0, float(core.hp[index, p])):.0f}", (x0, 48), font, 0.5, (230, 230, 230), 1
        )
        for s in range(3):
            left = core.cooldown[index, p, s] / max(1, int(core._cooldown_of[s]))
            cx = x0 + s * 46 + (bar_w - 140 if p == 1 else 0)
            cv2.rectangle(img, (cx, 56), (cx + 40, 64), (60, 60, 60), -1)
            cv2.rectangle(img, (cx, 56), (cx + int((1 - left) * 40), 64), (200, 200, 200) if left == 0 else color, -1)
            cv2.putText(img, _SKILL_LABELS[s], (cx + 15, 78), font, 0.4, (200, 200, 200), 1)
    seconds_left = max(0.0, (cfg.round_ticks - int(core.tick[index])) / cfg.tick_rate_hz)
    cv2.putText(img, f"{seconds_left:4.1f}", (width // 2 - 24, 30), font, 0.7, (255, 255, 255), 2)
    if core.done[index]:
        w = int(core.winner[index])
        text = ("DRAW" if w < 0 else f"{names[w]} WINS") + (" (KO)" if core.ko[index] else "")
        cv2.putText(img, text, (width // 2 - 110, height // 2), font, 1.1, (255, 255, 255), 3)
    if caption:
        cv2.putText(img, caption, (10, height - 15), font, 0.5, (230, 230, 230), 1)
    return img
