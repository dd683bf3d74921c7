"""The plan of a demo release: mice, behavior sessions, ophys sessions, imaging planes and cells.

Pure data, derived deterministically from a seed and size knobs. Tables, images, traces and NWB files are all
rendered from one `ReleaseDesign`, so they agree with each other the way the real release does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from vb2p.errors import ConfigError
from vb2p.layout import MESOSCOPE_RIGS

SCIENTIFICA_SHAPE_HEIGHT = 512
SCIENTIFICA_WIDTHS = (447, 448, 449, 450, 451, 452)
MESOSCOPE_SHAPE = (512, 512)
# True acquisition rates; the NWB imaging_rate attribute is rounded (31.0 / 11.0) as in the real files.
SCIENTIFICA_RATE_HZ = 30.94
MESOSCOPE_RATE_HZ = 10.72
FIELD_MARGIN_PX = 12  # the container's field is larger than one session's view, so shifted views stay inside it
MAX_SHIFT_PX = 5.0
GRAY_SCREEN_S = 300.0  # the gray screen before and after the task in every real ophys session
def demo_knob(key: str, what: str = "default"):
    """A demo knob's default (or bound) from the config schema: the one place the demo's defaults are written, for the
    workflow, `vb2p demo-release` and this module alike."""
    from vb2p.config import load_schema

    return load_schema()["properties"]["demo"]["properties"][key][what]


MIN_DURATION_S = demo_knob("duration_s", "minimum")  # one trial: up to 11 flashes before the change and 3 after

# Mean valid ROIs per plane by (cre line, Mesoscope rig). No real cells table is available: these are estimated from
# the release totals (layout document section 6: mean 68.7, median 22, quartiles 11 / 99 over 1,936 planes; about
# 170 on single-plane rigs) and the experiment counts per line and rig in the real experiment table.
REAL_ROIS_PER_PLANE = {
    ("Slc17a7-IRES2-Cre", False): 270,
    ("Slc17a7-IRES2-Cre", True): 75,
    ("Vip-IRES-Cre", False): 30,
    ("Vip-IRES-Cre", True): 18,
    ("Sst-IRES-Cre", False): 14,
    ("Sst-IRES-Cre", True): 9,
}
DENSEST_PLANE = ("Slc17a7-IRES2-Cre", False)
MIN_ROIS_PER_PLANE = 4  # enough for a change, an omission, an image and a silent cell on the sparsest plane

# What fraction of a line's neurons respond to changes, omissions or their preferred image (the rest respond to none):
# Vip cells to omissions, Sst cells to images, excitatory cells to changes and images, as the release shows.
RESPONSE_FRACTIONS = {
    "Slc17a7-IRES2-Cre": {"change": 0.25, "image": 0.25, "omission": 0.05},
    "Sst-IRES-Cre": {"change": 0.15, "image": 0.40, "omission": 0.05},
    "Vip-IRES-Cre": {"change": 0.10, "image": 0.15, "omission": 0.40},
}
RESPONSE_TYPES = ("change", "image", "omission", "none")
# Summed event amplitude (dF/F) of one response, lognormal around these medians; an omission response spreads its
# events over a 750 ms ramp, so it peaks at about half of it.
RESPONSE_AMPLITUDE = {"change": 0.6, "image": 0.4, "omission": 1.0, "none": 0.0}

GENOTYPES = {
    "Slc17a7-GCaMP6f": {
        "cre_line": "Slc17a7-IRES2-Cre",
        "driver_line": ["Slc17a7-IRES2-Cre", "Camk2a-tTA"],
        "reporter_line": "Ai93(TITL-GCaMP6f)",
        "indicator": "GCaMP6f",
        "full_genotype": "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt",
    },
    "Slc17a7-GCaMP6s": {
        "cre_line": "Slc17a7-IRES2-Cre",
        "driver_line": ["Slc17a7-IRES2-Cre", "Camk2a-tTA"],
        "reporter_line": "Ai94(TITL-GCaMP6s)",
        "indicator": "GCaMP6s",
        "full_genotype": "Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai94(TITL-GCaMP6s)/wt",
    },
    "Sst": {
        "cre_line": "Sst-IRES-Cre",
        "driver_line": ["Sst-IRES-Cre"],
        "reporter_line": "Ai148(TIT2L-GC6f-ICL-tTA2)",
        "indicator": "GCaMP6f",
        "full_genotype": "Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt",
    },
    "Vip": {
        "cre_line": "Vip-IRES-Cre",
        "driver_line": ["Vip-IRES-Cre"],
        "reporter_line": "Ai148(TIT2L-GC6f-ICL-tTA2)",
        "indicator": "GCaMP6f",
        "full_genotype": "Vip-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt",
    },
}


@dataclass(frozen=True)
class MousePlan:
    """How one mouse of the demo is imaged: its line, project, rig and planes."""

    genotype: str
    project_code: str
    equipment_name: str
    planes: tuple[tuple[str, int], ...]  # (targeted_structure, depth in um), in plane-group order on Mesoscope
    familiar_images: str
    novel_images: str
    n_ophys_sessions: int
    sex: str
    omissions_during_habituation: bool = False


# The demo cycles through these mice; `mice=3` gives three cre lines, three project codes, both rig types, and for
# Slc17a7 and Sst every experience level (Familiar, Novel 1, Novel >1).
MESOSCOPE_PLANES = {
    "Vip": (("VISp", 75), ("VISl", 75), ("VISp", 150), ("VISl", 150)),
    "Sst": (("VISp", 150), ("VISl", 150), ("VISp", 225), ("VISl", 225)),
}
MOUSE_PLANS = (
    MousePlan("Slc17a7-GCaMP6f", "VisualBehavior", "CAM2P.4", (("VISp", 175),), "A", "B", 5, "M"),
    MousePlan("Vip", "VisualBehaviorMultiscope", "MESO.1", MESOSCOPE_PLANES["Vip"], "A", "B", 4, "F",
              omissions_during_habituation=True),
    MousePlan("Sst", "VisualBehaviorTask1B", "CAM2P.3", (("VISp", 275),), "B", "A", 5, "M"),
    MousePlan("Slc17a7-GCaMP6s", "VisualBehavior", "CAM2P.5", (("VISl", 225),), "A", "B", 5, "F"),
    MousePlan("Sst", "VisualBehaviorMultiscope", "MESO.1", MESOSCOPE_PLANES["Sst"], "A", "B", 6, "M",
              omissions_during_habituation=True),
    MousePlan("Vip", "VisualBehaviorTask1B", "CAM2P.4", (("VISp", 175),), "B", "A", 4, "F"),
)

# Ophys session types in acquisition order; which of them a container of n sessions gets.
OPHYS_SEQUENCE = (
    (1, "OPHYS_1_images_{F}", "F", False),
    (2, "OPHYS_2_images_{F}_passive", "F", True),
    (3, "OPHYS_3_images_{F}", "F", False),
    (4, "OPHYS_4_images_{N}", "N", False),
    (5, "OPHYS_5_images_{N}_passive", "N", True),
    (6, "OPHYS_6_images_{N}", "N", False),
)
SESSIONS_FOR_COUNT = {3: (1, 2, 4), 4: (1, 2, 3, 4), 5: (1, 2, 3, 4, 6), 6: (1, 2, 3, 4, 5, 6)}
TRAINING_SEQUENCE = (
    ("TRAINING_0_gratings_autorewards_15min", "gratings"),
    ("TRAINING_1_gratings", "gratings"),
    ("TRAINING_2_gratings_flashed", "gratings"),
    ("TRAINING_3_images_{F}_10uL_reward", "F"),
    ("TRAINING_4_images_{F}_training", "F"),
    ("TRAINING_5_images_{F}_epilogue", "F"),
)
HABITUATION_SESSIONS = 2


@dataclass(frozen=True)
class DemoSize:
    """Size knobs. The defaults make the small demo; benchmarks use hour-long sessions with hundreds of cells.

    duration_s is the change-detection block of each ophys session (real: 60 minutes). Every session also has a gray
    screen before and after it, as the real ones do (5 minutes each; the spontaneous activity response p-values are
    measured against): `gray_screen_s` is 5 minutes, shortened to duration_s only when the block is shorter than
    that (tiny test sizes). The default demo sessions last 300 + 660 + 300 s.

    cells_per_plane is the mean ROI count of a dense Slc17a7 Scientifica plane (real: about 270); the other lines and
    rigs keep the real proportions to it (REAL_ROIS_PER_PLANE: sparse Sst and Vip planes, Mesoscope planes about a
    quarter), with at least MIN_ROIS_PER_PLANE per plane.
    """

    mice: int = field(default_factory=lambda: demo_knob("mice"))
    duration_s: float = field(default_factory=lambda: demo_knob("duration_s"))
    cells_per_plane: int = field(default_factory=lambda: demo_knob("cells_per_plane"))
    all_traces: bool = field(default_factory=lambda: demo_knob("all_traces"))  # also demixed and neuropil traces

    def __post_init__(self):
        if self.duration_s < MIN_DURATION_S:
            raise ConfigError(
                f"demo duration_s={self.duration_s} is too short: the change-detection block needs at least "
                f"{MIN_DURATION_S} s (one trial of 14 flashes)"
            )

    @property
    def gray_screen_s(self) -> float:
        return min(GRAY_SCREEN_S, self.duration_s)


@dataclass(frozen=True)
class Response:
    """What a neuron responds to. Image cells prefer one image of each image set: preferred_rank[0] indexes the
    mouse's familiar set, preferred_rank[1] its novel set (tuning to novel images is drawn afresh)."""

    response_type: str  # one of RESPONSE_TYPES
    amplitude: float  # summed event amplitude of one response, dF/F; 0 for "none"
    preferred_rank: tuple[int, int]


@dataclass
class Cell:
    """One ROI of one experiment."""

    cell_roi_id: int
    cell_specimen_id: int  # -1 when not matched across sessions
    valid_roi: bool
    neuron: int  # index into the container's neurons, -1 for ROIs seen in this session only
    center_y: float  # in this session's pixel coordinates
    center_x: float
    radius: float
    response: Response


@dataclass
class Experiment:
    ophys_experiment_id: int
    ophys_container_id: int
    targeted_structure: str
    imaging_depth: int
    imaging_plane_group: int | None  # None on single-plane rigs
    plane_index: int
    file_id: int = -1
    cells: list[Cell] = field(default_factory=list)
    shift_y: float = 0.0  # content displacement of this session's view relative to the container field
    shift_x: float = 0.0
    brightness_gain: float = 1.0
    isi_experiment_id: int = 0


@dataclass
class BehaviorSession:
    behavior_session_id: int
    mouse_index: int
    session_type: str
    image_set: str  # 'gratings' or 'images_A'...
    passive: bool
    equipment_name: str
    date_of_acquisition: dt.datetime
    session_number: int | None  # ophys stage number; None for training
    experience_level: str
    prior_exposures_to_session_type: int
    prior_exposures_to_image_set: int | None
    prior_exposures_to_omissions: int
    has_omissions: bool
    trial_counts: dict[str, int] | None  # None for ophys sessions: their counts come from the task in their files
    ophys_session_id: int | None = None
    experiments: list[Experiment] = field(default_factory=list)
    file_id: int | None = -999  # None: the cell is empty in the table

    @property
    def is_ophys(self) -> bool:
        return self.ophys_session_id is not None


@dataclass
class Container:
    ophys_container_id: int
    mouse_index: int
    targeted_structure: str
    depth: int
    plane_index: int
    field_shape: tuple[int, int]  # (height, width) of the container's field, larger than one view
    view_shape: tuple[int, int]  # (height, width) of each session's field of view
    neuron_y: np.ndarray  # neuron centres in field coordinates
    neuron_x: np.ndarray
    neuron_radius: np.ndarray
    cell_specimen_ids: np.ndarray
    neuron_responses: list[Response]  # kept across the container's sessions


@dataclass
class Mouse:
    index: int
    mouse_id: str
    plan: MousePlan
    date_of_birth: dt.datetime

    @property
    def genotype(self) -> dict:
        return GENOTYPES[self.plan.genotype]

    @property
    def is_mesoscope(self) -> bool:
        return self.plan.equipment_name in MESOSCOPE_RIGS

    @property
    def frame_rate_hz(self) -> float:
        return MESOSCOPE_RATE_HZ if self.is_mesoscope else SCIENTIFICA_RATE_HZ


@dataclass
class ReleaseDesign:
    seed: int
    size: DemoSize
    mice: list[Mouse]
    sessions: list[BehaviorSession]  # every behavior session, training included, in table order
    containers: dict[int, Container]

    def experiments(self) -> list[Experiment]:
        return [e for s in self.sessions for e in s.experiments]

    def session_of(self) -> dict[int, BehaviorSession]:
        """ophys_experiment_id -> its behavior session."""
        return {e.ophys_experiment_id: s for s in self.sessions for e in s.experiments}


def random_stream(seed: int, *tags: int) -> np.random.Generator:
    """An independent random stream for one purpose, so results do not depend on generation order."""
    return np.random.default_rng([seed, *tags])


class _IdCounter:
    """Increasing LIMS-like ids with random gaps, as the real ids have."""

    def __init__(self, rng: np.random.Generator, start: int, max_gap: int):
        self._rng, self._next, self._max_gap = rng, start, max_gap

    def __call__(self) -> int:
        self._next += int(self._rng.integers(1, self._max_gap))
        return self._next


def _image_set_letter(template: str, plan: MousePlan) -> str:
    return template.format(F=plan.familiar_images, N=plan.novel_images)


def _behavior_only_trial_counts(rng: np.random.Generator) -> dict[str, int]:
    """Trial counts of a training or habituation session, whose file holds no task in the demo."""
    go = int(rng.integers(150, 320))
    catch = int(go * rng.uniform(0.08, 0.15))
    hit = int(go * rng.uniform(0.5, 0.9))
    false_alarm = int(catch * rng.uniform(0.05, 0.35))
    aborted = int(rng.integers(20, 120))
    return {
        "trial_count": go + catch + aborted,
        "go_trial_count": go,
        "catch_trial_count": catch,
        "hit_trial_count": hit,
        "miss_trial_count": go - hit,
        "false_alarm_trial_count": false_alarm,
        "correct_reject_trial_count": catch - false_alarm,
        "engaged_trial_count": int((go + catch) * rng.uniform(0.6, 0.95)),
    }


def design_release(seed: int = 0, size: DemoSize | None = None) -> ReleaseDesign:
    """Plan a whole demo release. Deterministic in (seed, size)."""
    size = size or DemoSize()
    if size.mice < 1:
        raise ValueError("the demo needs at least one mouse (mice >= 1)")
    lims_ids = _IdCounter(random_stream(seed, 1), start=870_000_000, max_gap=40_000)
    mice: list[Mouse] = []
    sessions: list[BehaviorSession] = []
    containers: dict[int, Container] = {}
    for index in range(size.mice):
        plan = MOUSE_PLANS[index % len(MOUSE_PLANS)]
        rng = random_stream(seed, 2, index)
        first_training = dt.datetime(2019, 3, 4, 8, 0, tzinfo=dt.timezone.utc) + dt.timedelta(days=19 * index)
        mouse = Mouse(
            index=index,
            mouse_id=str(400_000 + int(random_stream(seed, 3).integers(0, 90_000)) + 997 * index),
            plan=plan,
            date_of_birth=first_training - dt.timedelta(days=int(rng.integers(75, 90))),
        )
        mice.append(mouse)
        mouse_containers = _plan_containers(seed, mouse, size, lims_ids)
        containers.update({c.ophys_container_id: c for c in mouse_containers})
        sessions.extend(_plan_sessions(seed, mouse, first_training, mouse_containers, lims_ids))
    _number_files(sessions)
    design = ReleaseDesign(seed=seed, size=size, mice=mice, sessions=sessions, containers=containers)
    _plan_views_and_cells(seed, design)
    return design


def mouse_cells_per_plane(mouse: Mouse, size: DemoSize) -> int:
    """Mean ROIs per plane of this mouse's line and rig, scaled so that a dense Slc17a7 Scientifica plane has
    size.cells_per_plane."""
    ratio = REAL_ROIS_PER_PLANE[(mouse.genotype["cre_line"], mouse.is_mesoscope)] / REAL_ROIS_PER_PLANE[DENSEST_PLANE]
    return max(MIN_ROIS_PER_PLANE, round(size.cells_per_plane * ratio))


def draw_response(rng: np.random.Generator, response_type: str) -> Response:
    amplitude = 0.0 if response_type == "none" else float(rng.lognormal(np.log(RESPONSE_AMPLITUDE[response_type]), 0.3))
    return Response(response_type, amplitude, (int(rng.integers(0, 8)), int(rng.integers(0, 8))))


def neuron_response_types(rng: np.random.Generator, cre_line: str, n_neurons: int) -> list[str]:
    """Response types of a plane's neurons in the line's proportions; every type, 'none' included, occurs once the
    plane has MIN_ROIS_PER_PLANE neurons, so each plane has known answers of each kind."""
    fractions = RESPONSE_FRACTIONS[cre_line]
    counts = {kind: int(round(fraction * n_neurons)) for kind, fraction in fractions.items()}
    if n_neurons >= MIN_ROIS_PER_PLANE:
        counts = {kind: max(1, count) for kind, count in counts.items()}
        while sum(counts.values()) > n_neurons - 1:
            counts[max(counts, key=counts.get)] -= 1
    types = [kind for kind in fractions for _ in range(counts[kind])][:n_neurons]
    types += ["none"] * (n_neurons - len(types))
    return [types[i] for i in rng.permutation(n_neurons)]


def _plan_containers(seed: int, mouse: Mouse, size: DemoSize, lims_ids: _IdCounter) -> list[Container]:
    rng = random_stream(seed, 4, mouse.index)
    result = []
    for plane_index, (structure, depth) in enumerate(mouse.plan.planes):
        if mouse.is_mesoscope:
            view = MESOSCOPE_SHAPE
        else:
            view = (SCIENTIFICA_SHAPE_HEIGHT, int(rng.choice(SCIENTIFICA_WIDTHS)))
        field_shape = (view[0] + 2 * FIELD_MARGIN_PX, view[1] + 2 * FIELD_MARGIN_PX)
        n_neurons = max(MIN_ROIS_PER_PLANE, int(round(mouse_cells_per_plane(mouse, size) * rng.uniform(0.85, 1.15))))
        # Neurons avoid the band that a shifted view may cut off, so every session sees each of them whole.
        border = FIELD_MARGIN_PX + MAX_SHIFT_PX + 10
        y, x = _spread_points(rng, n_neurons, field_shape, border, min_distance=17.0)
        result.append(
            Container(
                ophys_container_id=lims_ids(), mouse_index=mouse.index, targeted_structure=structure, depth=depth,
                plane_index=plane_index, field_shape=field_shape, view_shape=view, neuron_y=y, neuron_x=x,
                neuron_radius=rng.uniform(5.5, 8.0, size=len(y)),
                cell_specimen_ids=np.zeros(len(y), dtype=np.int64),  # assigned with the cells
                neuron_responses=[
                    draw_response(rng, kind) for kind in neuron_response_types(rng, mouse.genotype["cre_line"], len(y))
                ],
            )
        )
    return result


def _spread_points(rng, n, shape, border, min_distance, existing=()):
    """Soma centres with a minimum spacing (somata do not overlap), by rejection sampling."""
    placed = list(existing)
    new_y, new_x = [], []
    attempts = 0
    while len(new_y) < n and attempts < 500 * max(n, 1):
        attempts += 1
        y = rng.uniform(border, shape[0] - border)
        x = rng.uniform(border, shape[1] - border)
        if all((y - py) ** 2 + (x - px) ** 2 >= min_distance**2 for py, px in placed):
            placed.append((y, x))
            new_y.append(y)
            new_x.append(x)
    return np.array(new_y), np.array(new_x)


def _plan_sessions(
    seed: int, mouse: Mouse, first_training: dt.datetime, containers: list[Container], lims_ids: _IdCounter
) -> list[BehaviorSession]:
    plan = mouse.plan
    rng = random_stream(seed, 5, mouse.index)
    sessions: list[BehaviorSession] = []
    by_type: dict[str, int] = {}
    by_image_set: dict[str, int] = {}
    omissions_seen = 0

    def add(session_type, image_set, passive, equipment, number, experience, has_omissions):
        nonlocal omissions_seen
        day = first_training + dt.timedelta(days=len(sessions))
        start = day + dt.timedelta(seconds=int(rng.integers(0, 3 * 3600)), milliseconds=int(rng.integers(0, 1000)))
        session = BehaviorSession(
            behavior_session_id=lims_ids(), mouse_index=mouse.index, session_type=session_type, image_set=image_set,
            passive=passive, equipment_name=equipment, date_of_acquisition=start, session_number=number,
            experience_level=experience,
            prior_exposures_to_session_type=by_type.get(session_type, 0),
            prior_exposures_to_image_set=None if image_set == "gratings" else by_image_set.get(image_set, 0),
            prior_exposures_to_omissions=omissions_seen,
            has_omissions=has_omissions,
            trial_counts=None if number else _behavior_only_trial_counts(rng),
        )
        by_type[session_type] = by_type.get(session_type, 0) + 1
        by_image_set[image_set] = by_image_set.get(image_set, 0) + 1
        omissions_seen += int(has_omissions)
        sessions.append(session)
        return session

    familiar = f"images_{plan.familiar_images}"
    training_box = f"BEH.{'ABCDEFG'[mouse.index % 7]}-Box{1 + int(rng.integers(0, 6))}"
    for template, images in TRAINING_SEQUENCE:
        image_set = "gratings" if images == "gratings" else familiar
        add(_image_set_letter(template, plan), image_set, False, training_box, None, "Training", False)
    for _ in range(HABITUATION_SESSIONS):
        session_type = f"OPHYS_0_{familiar}_habituation"
        add(session_type, familiar, False, plan.equipment_name, 0, "Familiar", plan.omissions_during_habituation)

    novel_sessions = 0
    for stage_position, stage in enumerate(SESSIONS_FOR_COUNT[plan.n_ophys_sessions]):
        number, template, which, passive = OPHYS_SEQUENCE[stage - 1]
        letter = plan.familiar_images if which == "F" else plan.novel_images
        if which == "F":
            experience = "Familiar"
        else:
            experience = "Novel 1" if novel_sessions == 0 else "Novel >1"
            novel_sessions += 1
        session = add(
            _image_set_letter(template, plan), f"images_{letter}", passive, plan.equipment_name, number, experience, True
        )
        session.ophys_session_id = lims_ids()
        for container in containers:
            # On the Mesoscope a plane can fail QC in one session: its container then has one session fewer.
            if mouse.is_mesoscope and stage_position == 2 and container is containers[-1] and len(containers) > 1:
                continue
            session.experiments.append(
                Experiment(
                    ophys_experiment_id=lims_ids(),
                    ophys_container_id=container.ophys_container_id,
                    targeted_structure=container.targeted_structure,
                    imaging_depth=container.depth,
                    imaging_plane_group=container.plane_index // 2 if mouse.is_mesoscope else None,
                    plane_index=container.plane_index,
                    isi_experiment_id=lims_ids(),
                )
            )
    return sessions


def _plan_views_and_cells(seed: int, design: ReleaseDesign) -> None:
    """Per experiment: the rigid shift of its view, its brightness, and its ROIs (matched and unmatched)."""
    cell_ids = _IdCounter(random_stream(seed, 6), start=1_086_000_000, max_gap=4)
    roi_ids = _IdCounter(random_stream(seed, 7), start=1_080_000_000, max_gap=4)
    by_container: dict[int, list[Experiment]] = {}
    for experiment in design.experiments():
        by_container.setdefault(experiment.ophys_container_id, []).append(experiment)
    for container_id, experiments in by_container.items():
        container = design.containers[container_id]
        container.cell_specimen_ids[:] = [cell_ids() for _ in range(len(container.neuron_y))]
        for experiment in experiments:
            rng = random_stream(seed, 8, experiment.ophys_experiment_id)
            experiment.shift_y, experiment.shift_x = (float(v) for v in rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX, 2))
            experiment.brightness_gain = float(rng.uniform(0.75, 1.3))
            cre_line = design.mice[container.mouse_index].genotype["cre_line"]
            experiment.cells = _session_cells(rng, container, experiment, roi_ids, cre_line)


def _session_cells(
    rng, container: Container, experiment: Experiment, roi_ids: _IdCounter, cre_line: str
) -> list[Cell]:
    """The session's ROIs: the container neurons it sees (90 %), plus ROIs of this session only: unmatched cells
    (responding in the line's proportions) and invalid ROIs (not cells: they respond to nothing)."""
    offset_y = experiment.shift_y - FIELD_MARGIN_PX
    offset_x = experiment.shift_x - FIELD_MARGIN_PX
    present = np.flatnonzero(rng.random(len(container.neuron_y)) < 0.9)
    centres = [(container.neuron_y[i] + offset_y, container.neuron_x[i] + offset_x) for i in present]
    n_unmatched = max(1, round(0.08 * len(present)))
    n_invalid = max(1, round(0.04 * len(present)))
    extra_y, extra_x = _spread_points(
        rng, n_unmatched + n_invalid, container.view_shape, 20.0, min_distance=17.0, existing=centres
    )
    cells = [
        Cell(
            0, int(container.cell_specimen_ids[i]), True, int(i), cy, cx, float(container.neuron_radius[i]),
            container.neuron_responses[i],
        )
        for i, (cy, cx) in zip(present, centres)
    ]
    kinds = list(RESPONSE_FRACTIONS[cre_line]) + ["none"]
    weights = np.array(list(RESPONSE_FRACTIONS[cre_line].values()) + [1.0 - sum(RESPONSE_FRACTIONS[cre_line].values())])
    for k, (cy, cx) in enumerate(zip(extra_y, extra_x)):
        valid = k < n_unmatched
        kind = str(rng.choice(kinds, p=weights)) if valid else "none"
        radius = float(rng.uniform(5.5, 8.0))
        cells.append(Cell(0, -1, valid, -1, float(cy), float(cx), radius, draw_response(rng, kind)))
    order = rng.permutation(len(cells))
    cells = [cells[i] for i in order]
    for cell in cells:
        cell.cell_roi_id = roi_ids()
    return cells


def _number_files(sessions: list[BehaviorSession]) -> None:
    """file_id as in the real tables: experiments from 0 in table order, behavior-only sessions after a gap,
    -999 or empty (both occur) for behavior sessions whose data lives in the experiment files."""
    file_id = 0
    for session in sessions:
        for experiment in session.experiments:
            experiment.file_id = file_id
            file_id += 1
    file_id += 5
    for position, session in enumerate(s for s in sessions if not s.is_ophys):
        session.file_id = file_id + position
    for position, session in enumerate(s for s in sessions if s.is_ophys):
        session.file_id = -999 if position % 2 == 0 else None
