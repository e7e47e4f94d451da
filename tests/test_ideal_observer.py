"""The ideal-observer bound of benchmarks/ideal_observer.py: it sees the
generator's own MC signals, and its threshold and detection probabilities
are what they claim on simulated noise."""

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

ideal = pytest.importorskip("ideal_observer")


def test_templates_carry_the_generators_truth_contrast():
    mcs, ph = ideal.mc_templates(seed=1, spacing=0.2)
    truth = ph.truth["calcifications"]
    assert len(mcs) == len(truth) > 0
    for mc in mcs:
        s, w = mc["s"], mc["w"]
        k = int(np.argmax(s))
        # the peak of the signal is the truth contrast, and the prewhitened
        # signal there is the truth CNR (contrast over the noise sd at the peak)
        assert s.flat[k] == pytest.approx(mc["contrast_log"], rel=1e-9)
        assert w.flat[k] == pytest.approx(mc["cnr"], rel=1e-6)
        # the matched filter collects at least the peak
        assert np.linalg.norm(w) >= mc["cnr"]
        # the centre lies where the signal is
        r, c = int(round(mc["row"])), int(round(mc["col"]))
        assert abs(r - k // s.shape[1]) <= 1 and abs(c - k % s.shape[1]) <= 1


def _gauss_template(sigma, half=6):
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    return np.exp(-(x * x + y * y) / (2 * sigma * sigma))


def test_threshold_gives_the_asked_false_blobs_on_noise():
    rng = np.random.default_rng(5)
    w = _gauss_template(1.2)
    area = 2e6
    rate = ideal.blob_rate(w, ideal.T_CAL, rng, side=1024, reps=8)
    t = ideal.threshold_1fp(rate, area, fp=20.0)  # 20 per image: a count with a small Poisson error
    assert 3.5 < t < 6
    got = ideal.simulated_fp(w, t, area, rng, side=1024, reps=16)  # 8 images' worth of noise
    # 160 expected blobs in all: within 4 Poisson standard deviations (and the
    # calibration's own error) of 20 per image
    assert abs(got - 20.0) < 4 * math.sqrt(20.0 / 8) + 0.25 * 20


def test_detection_probability_follows_d_prime():
    rng = np.random.default_rng(7)
    w = _gauss_template(1.0)
    mc = {"w": w, "row": 6.0, "col": 6.0, "diameter_mm": 0.2}
    d = float(np.linalg.norm(w))
    pk = ideal.peak_samples(dict(mc, w=w * (10 / d)), 0.1, rng, 400)
    assert len(pk) == 400
    assert np.mean(pk > 4.5) > 0.99 and np.mean(pk > 20.0) < 0.01  # d' = 10: above 4.5 always, 20 never
    pk = ideal.peak_samples(dict(mc, w=w * (4.5 / d)), 0.1, rng, 400)
    # at t = d' the field at the centre alone exceeds t half the time; the
    # disc (0.5 mm = 5 px) adds the chance of a noise peak nearby
    assert 0.5 - 3 * math.sqrt(0.25 / 400) < np.mean(pk > 4.5) < 0.95


def test_told_the_clusters_the_observer_finds_at_least_as_many():
    rng = np.random.default_rng(9)
    w = _gauss_template(1.0)
    d = float(np.linalg.norm(w))
    mcs = [{"w": w * (k / d), "row": 6.0, "col": 6.0, "diameter_mm": 0.2} for k in (3.5, 4.0, 4.5, 5.0)]
    peaks = [ideal.peak_samples(mc, 0.1, rng, 400) for mc in mcs]
    rate = ideal.blob_rate(w, ideal.T_CAL, rng, side=512, reps=4)
    area = 1e6
    uniform = sum(np.mean(pk > ideal.threshold_1fp(rate, area)) for pk in peaks)
    # all four in a cluster region of 1 % of the breast: a lower threshold there
    told = ideal.oracle_found(peaks, [rate] * 4, [True] * 4, area, 0.01 * area)
    assert told > uniform + 0.3
    # no cluster MCs: the oracle gives its whole budget to the rest, as the uniform observer
    rest = ideal.oracle_found(peaks, [rate] * 4, [False] * 4, area, 0.01 * area)
    assert rest == pytest.approx(sum(np.mean(pk > ideal.threshold_1fp(rate, 0.99 * area)) for pk in peaks))
