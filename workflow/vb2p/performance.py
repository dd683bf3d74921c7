"""Behavior performance of a session, equal to AllenSDK 2.16.2's `get_rolling_performance_df` and
`get_performance_metrics` (allensdk.brain_observatory.behavior: dprime.py, data_objects/trials/trials.py,
behavior_session.py), computed from the trials and rewards tables and the task's response window; the rolling
windows are vectorized where AllenSDK loops over trials.

Rates are rolling over the last 100 non-aborted trials; the corrected rates are clipped to [1/2N, 1 - 1/2N] for N
go (catch) trials in the window, and d' clips both rates to [0.01, 0.99]. The reward rate of trial i counts the
first licks 0.15-0.75 s after the change (on catch trials too, as AllenSDK does) in trials i-25 to i+24, per
minute, and is NaN for the first 10 trials. A trial is engaged when its reward rate exceeds 2 rewards per minute.
A session where the mouse could not respond (no licks, no reward volume: a passive session) has d' 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtri  # = scipy.stats.norm.ppf (its implementation), without importing scipy.stats

SLIDING_WINDOW = 100  # trials, for hit and false-alarm rates
REWARD_WINDOW_S = 0.75  # a response this soon after the change counts as rewarded
REWARD_TRIAL_WINDOW = 25  # trials on each side for the reward rate
REWARD_INITIAL_TRIALS = 10  # the first trials have no reward rate
ENGAGED_REWARD_RATE = 2.0  # rewards per minute
ROLLING_COLUMNS = ("reward_rate", "hit_rate_raw", "hit_rate", "false_alarm_rate_raw", "false_alarm_rate",
                   "rolling_dprime")


def response_latency(trials: pd.DataFrame, response_window_start: float) -> np.ndarray:
    """Per trial, the first lick later than response_window_start after the change, minus the change time; inf
    without such a lick (and on trials without a change)."""
    latency = np.full(len(trials), np.inf)
    change_time = trials["change_time"].to_numpy(dtype=np.float64)
    for row, (licks, change) in enumerate(zip(trials["lick_times"], change_time)):
        after = np.atleast_1d(np.asarray(licks, dtype=np.float64)) - change
        valid = after[after > response_window_start]
        if valid.size:
            latency[row] = valid[0]
    return latency


def reward_rate(trials: pd.DataFrame, response_window_start: float) -> np.ndarray:
    """Rewarded responses (latency < 0.75 s) per minute over trials i-25 to i+24 of each trial i."""
    n = len(trials)
    rewarded = np.concatenate([[0], np.cumsum(response_latency(trials, response_window_start) < REWARD_WINDOW_S)])
    start_time = trials["start_time"].to_numpy(dtype=np.float64)
    rate = np.full(n, np.nan)
    trial = np.arange(REWARD_INITIAL_TRIALS, n)
    low = np.maximum(0, trial - REWARD_TRIAL_WINDOW)
    high = np.minimum(trial + REWARD_TRIAL_WINDOW, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate[trial] = (rewarded[high] - rewarded[low]) / (start_time[high - 1] - start_time[low]) * 60
    rate[np.isinf(rate)] = np.nan
    return rate


def _responses(trials: pd.DataFrame, one: str, zero: str) -> np.ndarray:
    """Over non-aborted trials: 1 where `one`, 0 where `zero` (it wins), NaN elsewhere."""
    kept = trials[~trials["aborted"].to_numpy(dtype=bool)]
    responses = np.full(len(kept), np.nan)
    responses[kept[one].to_numpy(dtype=bool)] = 1
    responses[kept[zero].to_numpy(dtype=bool)] = 0
    return responses


def _rolling_rates(responses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rolling mean of the responses (raw rate) and the rate clipped to [1/2N, 1 - 1/2N] (NaN where N = 0)."""
    rolling = pd.Series(responses).rolling(window=SLIDING_WINDOW, min_periods=0)
    raw, count = rolling.mean().to_numpy(), rolling.count().to_numpy()
    with np.errstate(divide="ignore"):
        bound = 1.0 / (2 * count)
    corrected = np.where(np.isnan(raw), raw, np.minimum(np.maximum(raw, bound), 1 - bound))
    return raw, np.where(count == 0, np.nan, corrected)


def dprime(hit_rate: np.ndarray, false_alarm_rate: np.ndarray) -> np.ndarray:
    limits = (1 / SLIDING_WINDOW, 1 - 1 / SLIDING_WINDOW)
    return ndtri(np.clip(hit_rate, *limits)) - ndtri(np.clip(false_alarm_rate, *limits))


def is_passive(trials: pd.DataFrame) -> bool:
    """AllenSDK's test of a session where the mouse could not respond (the lick spout withdrawn): no trial has a
    lick or a reward volume."""
    return bool((trials["reward_volume"] == 0).all()) and all(np.size(licks) == 0 for licks in trials["lick_times"])


def rolling_performance(trials: pd.DataFrame, response_window_start: float) -> pd.DataFrame:
    """AllenSDK's get_rolling_performance_df: per trial (index trials_id) reward_rate, hit_rate_raw, hit_rate,
    false_alarm_rate_raw, false_alarm_rate, rolling_dprime; the rates are NaN on aborted trials."""
    hit_raw, hit = _rolling_rates(_responses(trials, "hit", "miss"))
    false_alarm_raw, false_alarm = _rolling_rates(_responses(trials, "false_alarm", "correct_reject"))
    # d' means nothing when the mouse could not respond: AllenSDK sets it to 0.
    rolling_dprime = np.zeros(len(hit)) if is_passive(trials) else dprime(hit, false_alarm)
    kept = ~trials["aborted"].to_numpy(dtype=bool)
    table = pd.DataFrame(index=trials.index)
    table["reward_rate"] = reward_rate(trials, response_window_start)
    for name, values in zip(ROLLING_COLUMNS[1:], (hit_raw, hit, false_alarm_raw, false_alarm, rolling_dprime)):
        column = np.full(len(trials), np.nan)
        column[kept] = values
        table[name] = column
    return table


CHANGE_OUTCOMES = ("hit", "miss", "auto_rewarded")  # trial columns: go trials are hits or misses


def change_outcomes(presentations: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """The session's image changes (start_time) with the outcome of their trial: 'hit' or 'miss' for a go trial,
    'auto_rewarded' for a trial whose reward came free with the change, NaN for a change in no such trial. Counted,
    they are get_performance_metrics' hit_trial_count, miss_trial_count and auto_reward_count (an auto-rewarded
    change is neither a hit nor a miss there)."""
    flags = trials[list(CHANGE_OUTCOMES)].eq(True)  # missing values are no outcome
    outcome = pd.Series(np.select([flags[name] for name in CHANGE_OUTCOMES], CHANGE_OUTCOMES, default=None),
                        index=trials.index)
    changes = presentations.loc[presentations["is_change"], ["start_time", "trials_id"]]
    return changes.assign(outcome=changes["trials_id"].map(outcome))


def performance_metrics(trials: pd.DataFrame, rewards: pd.DataFrame, response_window_start: float,
                        engaged_trial_reward_rate_threshold: float = ENGAGED_REWARD_RATE) -> dict:
    """AllenSDK's get_performance_metrics: trial and reward counts, reward volume, maximum reward rate, engaged
    trials, and the means (overall and over engaged trials) and maxima of the rolling rates and d'. Python int and
    float values (AllenSDK gives numpy scalars for most). A session without trials, or with aborted trials only,
    gets NaN rates and d' (AllenSDK raises a ValueError on it)."""
    rolling = rolling_performance(trials, response_window_start)
    engaged = (rolling["reward_rate"] > engaged_trial_reward_rate_threshold).to_numpy()
    counts = {
        "trial_count": len(trials),
        **{f"{name}_trial_count": int(trials[name].sum())
           for name in ("go", "catch", "hit", "miss", "false_alarm", "correct_reject")},
        "auto_reward_count": int(trials["auto_rewarded"].sum()),
        "earned_reward_count": int(trials["hit"].sum()),
        "total_reward_count": len(rewards),
    }
    reward_rates = rolling["reward_rate"].to_numpy()
    return {
        **counts,
        "total_reward_volume": float(rewards["volume"].sum()),
        "maximum_reward_rate": float(np.nanmax(reward_rates)) if np.any(~np.isnan(reward_rates)) else np.nan,
        "engaged_trial_count": int(engaged.sum()),
        "mean_hit_rate": float(rolling["hit_rate"].mean()),
        "mean_hit_rate_uncorrected": float(rolling["hit_rate_raw"].mean()),
        "mean_hit_rate_engaged": float(rolling["hit_rate"][engaged].mean()),
        "mean_false_alarm_rate": float(rolling["false_alarm_rate"].mean()),
        "mean_false_alarm_rate_uncorrected": float(rolling["false_alarm_rate_raw"].mean()),
        "mean_false_alarm_rate_engaged": float(rolling["false_alarm_rate"][engaged].mean()),
        "mean_dprime": float(rolling["rolling_dprime"].mean()),
        "mean_dprime_engaged": float(rolling["rolling_dprime"][engaged].mean()),
        "max_dprime": float(rolling["rolling_dprime"].max()),
        "max_dprime_engaged": float(rolling["rolling_dprime"][engaged].max()),
    }
