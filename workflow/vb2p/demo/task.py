"""The change-detection session inside each demo experiment file, planned the way AllenSDK 2.16 writes the task.

A session is a gray screen, the change-detection block and another gray screen, on the 60 Hz display-frame clock.
In the block an image flashes every 750 ms (250 ms image, 500 ms gray). Trials start on a flash; after 4 to 11
flashes (geometric) the image changes (go trial), or stays the same for a sham change (catch trial). About 5 % of the
other flashes are omitted. The mouse licks in the response window after most changes (hit; a reward follows), after
some sham changes (false alarm), and sometimes before the change, which aborts the trial. The first trials of an
active session are auto-rewarded; passive sessions replay the task with the lick spout away: no licks, no rewards.

Clocks follow AllenSDK's writer (see the reference file's expected.json): stimulus timestamps, presentation times
and change_time include the monitor delay; trial start/stop, licks, rewards and running use the display-frame times
without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, signal

from vb2p.demo.design import BehaviorSession, ReleaseDesign, random_stream

STIMULUS_FRAME_RATE_HZ = 60.0
FRAME_PERIOD_S = 1.0 / STIMULUS_FRAME_RATE_HZ
FLASH_FRAMES = 45  # 750 ms
IMAGE_FRAMES = 15  # 250 ms
FLASH_S = FLASH_FRAMES * FRAME_PERIOD_S
IMAGE_S = IMAGE_FRAMES * FRAME_PERIOD_S
OMITTED_FLASH_FRACTION = 0.05
PRE_CHANGE_FLASHES = (4, 11)  # a trial's change comes this many flashes after its start (geometric, p=0.3)
POST_CHANGE_FLASHES = 3  # the trial ends this many flashes after its change
CATCH_FRACTION = 0.125
AUTO_REWARDED_TRIALS = 5
RESPONSE_WINDOW_S = (0.15, 0.75)
MONITOR_DELAY_S = (0.015, 0.04)
REWARD_VOLUME_ML = 0.007
AUTO_REWARD_VOLUME_ML = 0.005
AUTO_REWARD_DELAY_FRAMES = 9  # the free reward comes at the start of the response window
LICK_INTERVAL_FRAMES = (8, 10)  # licks in a bout come at about 7 Hz
ABORT_TIMEOUT_FRAMES = FLASH_FRAMES  # after an aborting bout, the next trial waits at least one flash
INT_NULL = -99  # what AllenSDK writes for missing integers (trials_id of the gray screens, change_frame of aborts)
EYE_CAMERA_RATE_HZ = 60.0
RUNNING_RADIUS_CM = 0.5 * 2.0 * 6.5 * 2.54 / 3.0  # AllenSDK: the mouse runs at 2/3 of a 6.5-inch wheel's radius
SPONTANEOUS = "spontaneous"

# The released image sets (sorted names: a template's image_index order) and their stimulus names.
IMAGE_SETS = {
    "A": ("im000", "im031", "im035", "im045", "im054", "im061", "im073", "im075"),
    "B": ("im012", "im024", "im034", "im044", "im047", "im078", "im083", "im111"),
    "G": ("im012", "im036", "im044", "im047", "im078", "im083", "im111", "im115"),
    "H": ("im005", "im024", "im034", "im083", "im087", "im104", "im111", "im114"),
}
STIMULUS_NAMES = {
    "A": "Natural_Images_Lum_Matched_set_training_2017.07.14",
    "B": "Natural_Images_Lum_Matched_set_ophys_6_2017.07.14",
    "G": "Natural_Images_Lum_Matched_set_ophys_G_2019.05.26",
    "H": "Natural_Images_Lum_Matched_set_ophys_H_2019.05.26",
}
BLOCK_NAMES = {
    "active": ("initial_gray_screen_5min", "change_detection_behavior", "post_behavior_gray_screen_5min"),
    "passive": ("initial_gray_screen_5min", "change_detection_passive", "post_behavior_gray_screen_5min"),
}
PRESENTATION_COLUMNS = (  # AllenSDK's order
    "stimulus_block",
    "stimulus_block_name",
    "image_index",
    "image_name",
    "duration",
    "start_time",
    "stop_time",
    "start_frame",
    "end_frame",
    "is_change",
    "is_image_novel",
    "omitted",
    "flashes_since_change",
    "trials_id",
    "active",
    "is_sham_change",
    "stimulus_name",
)
TRIAL_COUNT_COLUMNS = (
    "trial_count",
    "go_trial_count",
    "catch_trial_count",
    "hit_trial_count",
    "miss_trial_count",
    "false_alarm_trial_count",
    "correct_reject_trial_count",
    "engaged_trial_count",
)
ENGAGED_REWARDS_PER_MINUTE = 2.0  # a trial is engaged when the mouse earned this many rewards in the minute before


@dataclass
class Task:
    """One behavior session's task. Frames index `frame_times`; flash and trial tables are in AllenSDK's terms."""

    image_set: str  # 'A', 'B', 'G' or 'H'
    passive: bool
    frame_times: np.ndarray  # (n_frames,) float64 display-frame times on the sync clock, without monitor delay
    monitor_delay_s: float
    task_frames: tuple[int, int]  # first frame of the change-detection block, first frame after it
    gray_frames: int  # frames of each gray screen
    flashes: pd.DataFrame  # one row per flash of the block: start_frame, image_name, omitted, is_change, ...
    trials: pd.DataFrame  # one row per trial, AllenSDK's trials columns (lick_times as arrays)
    lick_frames: np.ndarray  # int64
    rewards: pd.DataFrame  # timestamps, volume, auto_rewarded
    has_eye_tracking: bool

    @property
    def stimulus_timestamps(self) -> np.ndarray:
        return self.frame_times + self.monitor_delay_s

    @property
    def image_names(self) -> tuple[str, ...]:
        return IMAGE_SETS[self.image_set]

    @property
    def stimulus_name(self) -> str:
        return STIMULUS_NAMES[self.image_set]

    @property
    def lick_times(self) -> np.ndarray:
        return self.frame_times[self.lick_frames]


@dataclass(frozen=True)
class Behavior:
    """How the mouse does this session: probabilities per trial."""

    hit: float
    false_alarm: float
    abort: float


def plan_session_task(design: ReleaseDesign, session: BehaviorSession) -> Task:
    """The task of one ophys session of the design (the same for every imaging plane of the session)."""
    mouse = design.mice[session.mouse_index]
    return plan_task(
        random_stream(design.seed, 20, session.behavior_session_id),
        image_set=session.image_set.removeprefix("images_"),
        familiar_image_set=mouse.plan.familiar_images,
        passive=session.passive,
        has_omissions=session.has_omissions,
        duration_s=design.size.duration_s,
        gray_screen_s=design.size.gray_screen_s,
    )


def plan_task(
    rng: np.random.Generator,
    image_set: str,
    familiar_image_set: str,
    passive: bool,
    has_omissions: bool,
    duration_s: float,
    gray_screen_s: float,
) -> Task:
    """A session of duration_s of flashes (the change-detection block) between two gray screens of gray_screen_s.
    Passive sessions replay the task without a mouse that can respond."""
    gray_frames = int(round(gray_screen_s * STIMULUS_FRAME_RATE_HZ))
    n_flashes = int(duration_s // FLASH_S)
    task_frames = (gray_frames, gray_frames + n_flashes * FLASH_FRAMES)
    n_frames = task_frames[1] + gray_frames + int(STIMULUS_FRAME_RATE_HZ)  # a second of gray after the last block
    periods = rng.normal(FRAME_PERIOD_S * 1.0007, 3e-5, n_frames - 1)
    frame_times = np.concatenate([[rng.uniform(0.0, 0.05)], periods]).cumsum()
    monitor_delay = float(rng.uniform(*MONITOR_DELAY_S))
    behavior = None if passive else Behavior(rng.uniform(0.6, 0.9), rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.15))
    start_frames = task_frames[0] + FLASH_FRAMES * np.arange(n_flashes)
    trials, image_of_flash, lick_frames = _plan_trials(rng, n_flashes, start_frames, IMAGE_SETS[image_set], behavior)
    change_flashes = np.array([t["change_flash"] for t in trials if t["change_flash"] >= 0], dtype=np.int64)
    omitted = _omitted_flashes(rng, n_flashes, change_flashes) if has_omissions else np.zeros(n_flashes, bool)
    flashes = _flash_table(trials, image_of_flash, omitted, start_frames, IMAGE_SETS[familiar_image_set])
    lick_frames = np.array(sorted(lick_frames), dtype=np.int64)
    stimulus_times = frame_times + monitor_delay
    trials_table = _trials_table(trials, start_frames, frame_times, stimulus_times, lick_frames, task_frames[1])
    return Task(
        image_set=image_set, passive=passive, frame_times=frame_times, monitor_delay_s=monitor_delay,
        task_frames=task_frames, gray_frames=gray_frames, flashes=flashes, trials=trials_table, lick_frames=lick_frames,
        rewards=_rewards(trials_table),
        has_eye_tracking=bool(rng.random() < 0.85),  # most real files have eye tracking, not all
    )


def _lick_bout(rng: np.random.Generator, first_frame: int) -> list[int]:
    gaps = rng.integers(*LICK_INTERVAL_FRAMES, size=int(rng.integers(3, 9)), endpoint=True)
    return [first_frame, *(first_frame + np.cumsum(gaps)).tolist()]


def _response_frame(rng: np.random.Generator, change_frame: int) -> int:
    """The frame of a first lick well inside the response window after the change drawn at change_frame, whatever
    the monitor delay (the window counts from the change on the screen)."""
    latency_s = rng.uniform(RESPONSE_WINDOW_S[0] + 0.1 + MONITOR_DELAY_S[1], RESPONSE_WINDOW_S[1] - 0.1)
    return change_frame + int(np.ceil(latency_s * STIMULUS_FRAME_RATE_HZ))


def _plan_trials(rng, n_flashes: int, start_frames: np.ndarray, images: tuple[str, ...], behavior: Behavior | None):
    """Trials as dicts (flash indices and outcomes), the image of every flash, and the lick frames."""
    image_of_flash = np.empty(n_flashes, dtype=object)
    current = str(rng.choice(images))
    trials: list[dict] = []
    licks: list[int] = []
    flash = 0
    while True:
        n_pre = PRE_CHANGE_FLASHES[0] + min(int(rng.geometric(0.3)) - 1, PRE_CHANGE_FLASHES[1] - PRE_CHANGE_FLASHES[0])
        change = flash + n_pre
        if change + POST_CHANGE_FLASHES > n_flashes:
            break
        trial = {"start_flash": flash, "initial_image_name": current, "trial_type": "go", "lick_frames": []}
        if behavior is not None and len(trials) < AUTO_REWARDED_TRIALS:
            trial["trial_type"] = "auto_rewarded"
        elif rng.random() < CATCH_FRACTION:
            trial["trial_type"] = "catch"
        if behavior is not None and trial["trial_type"] != "auto_rewarded" and rng.random() < behavior.abort:
            abort_flash = int(rng.integers(flash + 1, change))
            bout = _lick_bout(rng, int(start_frames[abort_flash] + rng.integers(6, 40)))
            next_flash = abort_flash + 1 + (bout[-1] + ABORT_TIMEOUT_FRAMES - start_frames[abort_flash]) // FLASH_FRAMES
            trial.update(trial_type="aborted", change_flash=-1, change_image_name=current, outcome="aborted")
            trial.update(lick_frames=bout, stop_flash=min(int(next_flash), n_flashes))
            image_of_flash[flash : trial["stop_flash"]] = current
        else:
            new = current
            if trial["trial_type"] != "catch":
                new = str(rng.choice([image for image in images if image != current]))
            image_of_flash[flash:change] = current
            image_of_flash[change : change + POST_CHANGE_FLASHES] = new
            trial.update(change_flash=change, change_image_name=new, stop_flash=change + POST_CHANGE_FLASHES)
            responds = behavior is not None and rng.random() < (
                behavior.false_alarm if trial["trial_type"] == "catch" else behavior.hit
            )
            if responds:
                trial["lick_frames"] = _lick_bout(rng, _response_frame(rng, int(start_frames[change])))
            trial["outcome"] = {
                ("go", True): "hit",
                ("go", False): "miss",
                ("catch", True): "false_alarm",
                ("catch", False): "correct_reject",
            }.get((trial["trial_type"], responds), "auto_rewarded")
            current = new
        licks.extend(trial["lick_frames"])
        trials.append(trial)
        flash = trial["stop_flash"]
        if flash >= n_flashes:
            break
    image_of_flash[flash:] = current
    trials[-1]["stop_flash"] = n_flashes  # the last trial runs to the end of the block
    return trials, image_of_flash, licks


def _omitted_flashes(rng: np.random.Generator, n_flashes: int, change_flashes: np.ndarray) -> np.ndarray:
    """About 5 % of flashes, never the first, a change or sham change, or a neighbour of one, never two in a row."""
    allowed = np.ones(n_flashes, dtype=bool)
    allowed[0] = False
    for offset in (-1, 0, 1):
        allowed[np.clip(change_flashes + offset, 0, n_flashes - 1)] = False
    chance = min(1.0, OMITTED_FLASH_FRACTION * n_flashes / max(allowed.sum(), 1))
    omitted = allowed & (rng.random(n_flashes) < chance)
    omitted[1:] &= ~omitted[:-1]
    return omitted


def _flash_table(trials, image_of_flash, omitted, start_frames, familiar_images) -> pd.DataFrame:
    n_flashes = len(image_of_flash)
    trials_id = np.zeros(n_flashes, dtype=np.int64)
    is_change = np.zeros(n_flashes, dtype=bool)
    is_sham_change = np.zeros(n_flashes, dtype=bool)
    for trial_id, trial in enumerate(trials):
        trials_id[trial["start_flash"] : trial["stop_flash"]] = trial_id
        if trial["change_flash"] >= 0:
            is_change[trial["change_flash"]] = trial["trial_type"] != "catch"
            is_sham_change[trial["change_flash"]] = trial["trial_type"] == "catch"
    # As AllenSDK counts them: omitted flashes keep the count, a change resets it.
    since_change = np.zeros(n_flashes, dtype=np.int64)
    for k in range(1, n_flashes):
        since_change[k] = since_change[k - 1] if omitted[k] else (0 if is_change[k] else since_change[k - 1] + 1)
    names = np.where(omitted, "omitted", image_of_flash.astype(str))
    return pd.DataFrame(
        {
            "start_frame": start_frames.astype(np.int64),
            "end_frame": (start_frames + IMAGE_FRAMES).astype(np.int64),
            "image_name": names,
            "omitted": omitted,
            "is_change": is_change,
            "is_sham_change": is_sham_change,
            "flashes_since_change": since_change,
            "trials_id": trials_id,
            "is_image_novel": ~np.isin(image_of_flash.astype(str), familiar_images),
        }
    )


def _trials_table(trials, start_frames, frame_times, stimulus_times, lick_frames, block_end_frame) -> pd.DataFrame:
    start_frame = np.array([start_frames[t["start_flash"]] for t in trials])
    stop_frame = np.array([start_frames[t["stop_flash"]] if t["stop_flash"] < len(start_frames) else block_end_frame
                           for t in trials])
    rows = []
    for trial, first, last in zip(trials, start_frame, stop_frame):
        kind, outcome = trial["trial_type"], trial["outcome"]
        start_time, stop_time = frame_times[first], frame_times[last]
        inside = lick_frames[(lick_frames >= first) & (lick_frames < last)]
        row = {
            "start_time": start_time,
            "stop_time": stop_time,
            "initial_image_name": trial["initial_image_name"],
            "change_image_name": trial["change_image_name"],
            "is_change": kind in ("go", "auto_rewarded"),
            "change_time": np.nan,
            "go": kind == "go",
            "catch": kind == "catch",
            "lick_times": frame_times[inside],
            "response_time": np.nan,
            "response_latency": np.nan,
            "reward_time": np.nan,
            "reward_volume": 0.0,
            "hit": outcome == "hit",
            "false_alarm": outcome == "false_alarm",
            "miss": outcome == "miss",
            "correct_reject": outcome == "correct_reject",
            "aborted": outcome == "aborted",
            "auto_rewarded": kind == "auto_rewarded",
            "change_frame": INT_NULL,
            "trial_length": stop_time - start_time,
        }
        if kind != "aborted":
            change_frame = int(start_frames[trial["change_flash"]])
            change_time = stimulus_times[change_frame]
            latency = frame_times[inside] - change_time
            window = frame_times[inside][(latency >= RESPONSE_WINDOW_S[0]) & (latency < RESPONSE_WINDOW_S[1])]
            row.update(change_frame=change_frame, change_time=change_time, response_latency=np.inf)
            if len(window):
                row.update(response_time=window[0], response_latency=window[0] - change_time)
            if outcome == "hit":
                row.update(reward_time=window[0], reward_volume=REWARD_VOLUME_ML)
            elif kind == "auto_rewarded":
                reward_frame = change_frame + AUTO_REWARD_DELAY_FRAMES
                row.update(reward_time=frame_times[reward_frame], reward_volume=AUTO_REWARD_VOLUME_ML)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.index = pd.Index(np.arange(len(table), dtype=np.int64), name="trials_id")
    return table


def _rewards(trials: pd.DataFrame) -> pd.DataFrame:
    rewarded = trials[trials.reward_volume > 0]
    return pd.DataFrame(
        {
            "timestamps": rewarded.reward_time.to_numpy(np.float64),
            "volume": rewarded.reward_volume.to_numpy(np.float64),
            "auto_rewarded": rewarded.auto_rewarded.to_numpy(bool),
        }
    )


def trial_counts(task: Task) -> dict[str, int]:
    """The behavior session table's trial-count columns, counted from the trials."""
    trials = task.trials
    reward_times = task.rewards.timestamps.to_numpy()
    recent = np.searchsorted(reward_times, trials.start_time) - np.searchsorted(reward_times, trials.start_time - 60.0)
    engaged = (recent >= ENGAGED_REWARDS_PER_MINUTE) & ~trials.aborted
    counts = [len(trials), trials.go.sum(), trials["catch"].sum(), trials.hit.sum(), trials.miss.sum(),
              trials.false_alarm.sum(), trials.correct_reject.sum(), engaged.sum()]
    return {column: int(count) for column, count in zip(TRIAL_COUNT_COLUMNS, counts)}


def stimulus_presentations(task: Task) -> pd.DataFrame:
    """Every presentation (the two gray screens and the flashes) as AllenSDK's stimulus_presentations shows them,
    before its own additions: index stimulus_presentations_id, sorted by start_time."""
    times = task.stimulus_timestamps
    block = task.flashes
    active = not task.passive
    names = BLOCK_NAMES["passive" if task.passive else "active"]
    image_index = {name: i for i, name in enumerate(task.image_names)} | {"omitted": len(task.image_names)}
    stop_time = np.where(block.omitted, times[block.start_frame] + IMAGE_S, times[block.end_frame])
    flashes = pd.DataFrame(
        {
            "stimulus_block": 1,
            "stimulus_block_name": names[1],
            "image_index": block.image_name.map(image_index).astype(np.int64),
            "image_name": block.image_name,
            "start_time": times[block.start_frame],
            "stop_time": stop_time,
            "start_frame": block.start_frame,
            "end_frame": block.end_frame,
            "is_change": block.is_change,
            "is_image_novel": pd.array(np.where(block.omitted, None, block.is_image_novel), dtype="boolean"),
            "omitted": block.omitted,
            "flashes_since_change": block.flashes_since_change,
            "trials_id": block.trials_id,
            "active": active,
            "is_sham_change": block.is_sham_change,
            "stimulus_name": task.stimulus_name,
        }
    )
    gray_start_frames = np.array([0, task.task_frames[1]])
    gray_end_frames = np.array([task.task_frames[0], task.task_frames[1] + task.gray_frames])
    gray = pd.DataFrame(
        {
            "stimulus_block": [0, 2],
            "stimulus_block_name": [names[0], names[2]],
            "image_index": INT_NULL,
            "start_time": times[gray_start_frames],
            "stop_time": times[gray_end_frames],
            "start_frame": gray_start_frames,
            "end_frame": gray_end_frames,
            "is_change": False,
            "flashes_since_change": INT_NULL,
            "trials_id": INT_NULL,
            "active": False,
            "is_sham_change": False,
            "stimulus_name": SPONTANEOUS,
        }
    )
    table = pd.concat([gray.iloc[:1], flashes, gray.iloc[1:]], ignore_index=True)
    # Flash-only flags are missing (NA) on the gray screens, as in AllenSDK's table.
    table = table.astype({"omitted": "boolean", "is_image_novel": "boolean"})
    table["duration"] = table.stop_time - table.start_time
    table = table[list(PRESENTATION_COLUMNS)]
    table.index = pd.Index(np.arange(len(table), dtype=np.int64), name="stimulus_presentations_id")
    return table


def slow_noise(rng: np.random.Generator, times: np.ndarray, timescale_s: float) -> np.ndarray:
    """A smooth random signal with unit standard deviation that varies over about timescale_s, made on a coarse
    grid and interpolated (cheap for hour-long 60 Hz series)."""
    grid = np.arange(times[0] - 4 * timescale_s, times[-1] + 4 * timescale_s, timescale_s / 4)
    smooth = ndimage.gaussian_filter1d(rng.standard_normal(len(grid)), 4.0)
    return np.interp(times, grid, smooth / smooth.std())


def running_wheel(rng: np.random.Generator, frame_times: np.ndarray) -> dict[str, np.ndarray]:
    """Running on the wheel, one sample per display frame: bouts of running and rest, the encoder's angle change
    per frame (dx, degrees), its voltages, and the speed computed from dx with and without AllenSDK's 10 Hz
    low-pass filter."""
    n = len(frame_times)
    running = slow_noise(rng, frame_times, 20.0) > -0.4
    target = np.where(running, rng.uniform(15, 35), 0.0) + 4.0 * slow_noise(rng, frame_times, 1.0)
    speed_true = np.clip(ndimage.gaussian_filter1d(target, 0.2 * STIMULUS_FRAME_RATE_HZ), -2.0, None)
    intervals = np.diff(frame_times, prepend=frame_times[0] - FRAME_PERIOD_S)
    dx = np.rad2deg((speed_true + rng.normal(0, 2.0, n)) * intervals / RUNNING_RADIUS_CM)
    speed_unfiltered = np.deg2rad(dx) * RUNNING_RADIUS_CM / intervals
    b, a = signal.butter(3, 10.0, fs=STIMULUS_FRAME_RATE_HZ)
    v_in = 5.0 + rng.normal(0, 0.002, n)
    return {
        "dx": dx,
        "speed_unfiltered": speed_unfiltered,
        "speed": signal.filtfilt(b, a, speed_unfiltered),
        "v_in": v_in,
        "v_sig": np.mod(np.cumsum(dx), 360.0) / 360.0 * v_in,
    }


def eye_tracking(rng: np.random.Generator, start_s: float, stop_s: float) -> pd.DataFrame:
    """Ellipse fits of eye, pupil and corneal reflection from a 60 Hz eye camera (pixels), with blinks: during a
    blink the eye and pupil areas collapse (AllenSDK finds them as outliers) and the filtered areas are NaN."""
    times = np.arange(start_s, stop_s, 1.0 / EYE_CAMERA_RATE_HZ)
    n = len(times)

    def slow(scale, timescale_s):
        return scale * slow_noise(rng, times, timescale_s)

    blink = np.zeros(n, dtype=bool)
    for onset in rng.integers(0, n, size=max(1, int((stop_s - start_s) / 12))):
        blink[onset : onset + int(rng.integers(6, 15))] = True
    table = {"timestamps": times}
    for name, (cx, cy, w, h, jitter) in {
        "eye": (320.0, 240.0, 140.0, 100.0, 1.0),
        "pupil": (318.0, 238.0, 32.0, 30.0, 3.0),
        "cr": (330.0, 230.0, 6.0, 5.5, 0.5),
    }.items():
        size = 1.0 + (slow(0.15, 8.0) if name == "pupil" else slow(0.02, 4.0))
        width = w * size * np.where(blink & (name != "cr"), 0.2, 1.0)
        height = h * size * np.where(blink & (name != "cr"), 0.2, 1.0)
        area_raw = np.pi * width * height
        table |= {
            f"{name}_center_x": cx + slow(jitter, 2.0),
            f"{name}_center_y": cy + slow(jitter, 2.0),
            f"{name}_width": width,
            f"{name}_height": height,
            f"{name}_phi": slow(0.05, 5.0),
            f"{name}_area_raw": area_raw,
            f"{name}_area": np.where(blink, np.nan, area_raw),
        }
    table["likely_blink"] = blink
    return pd.DataFrame(table)
