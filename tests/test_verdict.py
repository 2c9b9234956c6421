"""The study's one verdict rule (`claims.verdict`, re-exported as `runs.verdict`) against independent references:
simulated null experiments, the t distribution's power, scipy's tests and intervals worked out by hand."""
import math
import numpy as np, pandas as pd, pytest
from scipy import stats
from ssl_study.claims import (Claim, check_claims, holm, holm_levels, judge, mde, seeds_needed, spread_verdict, verdict,
                              verdict_table, verdicts_markdown)
from ssl_study.runs import verdict as runs_verdict

N_SIM = 4000


def _holds_rate(a, b, paired):
    "The share of simulated experiments (rows of a, b) that `verdict` calls 'holds' (a > b)."
    hits = 0
    for x, y in zip(a, b):
        if paired: x, y = dict(enumerate(x)), dict(enumerate(y))
        hits += verdict(x, y)['verdict'] == 'holds'
    return hits / len(a)


def _mc_bound(p, n=N_SIM): return p + 3 * math.sqrt(p * (1 - p) / n)     # 3 Monte Carlo standard errors above p


def test_runs_verdict_is_the_rule():
    assert runs_verdict is verdict


@pytest.mark.parametrize('paired', [False, True])
def test_no_effect_rarely_holds(paired):
    "3 vs 3 seeds and no true effect: 'holds' at most 2.5% of the time (one side of a 95% interval), never the old 11.7%."
    rng = np.random.default_rng(0)
    a, b = rng.normal(50, 2, (N_SIM, 3)), rng.normal(50, 2, (N_SIM, 3))
    rate = _holds_rate(a, b, paired)
    assert rate <= _mc_bound(0.025) and rate >= 0.01      # near the nominal one-sided 2.5%, not 0 either


def test_no_effect_with_one_constant_arm():
    "One arm constant (a metric that cannot tell the seeds apart): Welch's df shrink and the rate stays at most 2.5%."
    rng = np.random.default_rng(1)
    a, b = rng.normal(50, 2, (N_SIM, 3)), np.full((N_SIM, 3), 50.0)
    assert _holds_rate(a, b, paired=False) <= _mc_bound(0.025)


def test_power_at_two_sigma_matches_the_t_distribution():
    "A true paired effect of 2 sigma with 3 seeds: the holds rate is the noncentral t's power."
    rng = np.random.default_rng(2)
    n, delta = 3, 2.0
    d = rng.normal(delta, 1.0, (N_SIM, n))
    rate = _holds_rate(d, np.zeros_like(d), paired=True)
    df, t = n - 1, stats.t.ppf(0.975, n - 1)
    power = stats.nct.sf(t, df, delta * math.sqrt(n))          # P(T > t_crit), T ~ noncentral t(df, delta sqrt(n))
    assert abs(rate - power) < 3 * math.sqrt(power * (1 - power) / N_SIM) + 0.005


def test_paired_interval_by_hand():
    # differences 2.1, 1.8, 2.2: mean 2.0333, sd sqrt(((0.0667)^2 + (0.2333)^2 + (0.1667)^2) / 2) = 0.20817
    # se = 0.20817 / sqrt(3) = 0.12019; t_{0.975, 2} = 4.302653; half-width 0.51713
    v = verdict({0: 30.1, 1: 29.0, 2: 31.2}, {0: 28.0, 1: 27.2, 2: 29.0})
    assert v['paired'] and v['df'] == 2
    assert v['gap'] == pytest.approx(2.033333, abs=1e-5) and v['se'] == pytest.approx(0.120185, abs=1e-5)
    assert v['lo'] == pytest.approx(2.033333 - 0.517112, abs=1e-4) and v['hi'] == pytest.approx(2.033333 + 0.517112, abs=1e-4)
    assert v['verdict'] == 'holds'
    assert v['p'] == pytest.approx(stats.ttest_rel([30.1, 29.0, 31.2], [28.0, 27.2, 29.0]).pvalue)


def test_welch_interval_by_hand():
    # a = 9, 13: mean 11, var 8; b = 10, 10, 13: mean 11, var 3 -> se = sqrt(8/2 + 3/3) = sqrt(5)
    # df = 25 / (16/1 + 1/2) = 1.51515...
    v = verdict([9, 13], [10, 10, 13])
    assert v['gap'] == pytest.approx(0.0) and v['se'] == pytest.approx(math.sqrt(5)) and v['df'] == pytest.approx(25 / 16.5)
    assert v['verdict'] == 'inconclusive' and not v['paired']
    a, b = [31.0, 29.5, 30.4, 30.9], [27.0, 28.1, 26.5]
    v = verdict(a, b)
    assert v['p'] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (v['lo'], v['hi']) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_zero_spread_and_one_seed():
    assert verdict([5, 5, 5], [4.99] * 3)['verdict'] == 'inconclusive'          # the old rule said 'holds'
    v = verdict([5, 5, 5], [4.99] * 3, resolution=100 / 6149)                    # floored at one test image of 6149
    assert v['verdict'] == 'inconclusive' and v['se'] == pytest.approx(100 / 6149 * math.sqrt(2 / 3))
    assert verdict([30, 30, 30], [20, 20, 20], resolution=0.5)['verdict'] == 'holds'
    one = verdict([5.0], [1, 2, 3])
    assert one['verdict'] == 'inconclusive' and 'fewer than 2 seeds' in one['text'] and one['gap'] == pytest.approx(3.0)
    assert verdict([], [1, 2])['verdict'] == 'inconclusive' and math.isnan(verdict([], [1, 2])['gap'])


def test_directions_and_bad_input():
    assert verdict([1, 2, 3], [5, 6, 7])['verdict'] == 'fails' and verdict([1, 2, 3], [5, 6, 7], 'less')['verdict'] == 'holds'
    with pytest.raises(ValueError): verdict([1, 2], [0, 1], 'bigger')
    with pytest.raises(ValueError, match='same seeds'): verdict({0: 1, 1: 2}, {0: 1, 2: 2}, paired=True)
    v = verdict({0: 1.0, 1: 2.5, 2: 2.0}, {0: 1.2, 1: 1.0, 3: 3.0})      # different seeds: Welch
    assert not v['paired']


def test_mde_and_underpowered():
    assert mde(1.0, 1e7) == pytest.approx(stats.norm.ppf(0.975) + stats.norm.ppf(0.8), rel=1e-5)
    v = verdict({0: 30.0, 1: 25.0, 2: 31.0}, {0: 28.0, 1: 27.0, 2: 29.0}, effect=1.0)
    assert v['verdict'] == 'inconclusive' and v['underpowered'] and v['mde'] > 1.0
    # seeds_needed: paired sd 1, effect 2 -> n = 5: MDE(4) = (3.182 + 0.978) / 2 = 2.08 > 2; MDE(5) = (2.776 + 0.941) / 2.236 = 1.66
    assert seeds_needed(1.0, 2.0) == 5


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm_levels([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
    assert holm([0.001, 0.02]) == [True, True]           # 0.001 <= 0.025, then 0.02 <= 0.05


def test_spread_claims_use_a_variance_test():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 0.5, 12), rng.normal(0, 3, 12)
    v = spread_verdict(a, b)
    assert v['p'] == pytest.approx(stats.levene(a, b, center='median').pvalue) and v['verdict'] == 'holds'
    assert spread_verdict([1.0, 1.2, 0.9], [1.0, 1.5, 0.7])['verdict'] == 'inconclusive'   # sd ratio 2.6 > 1: not a verdict
    # equal spreads: a ratio above 1 half the time, but 'holds' only about alpha / 2 of the time
    sims = [spread_verdict(rng.normal(0, 1, 3), rng.normal(0, 1, 3))['verdict'] == 'holds' for _ in range(1000)]
    assert np.mean(sims) <= 0.05


def _table():
    accs = dict(ssl=(30.0, 30.6, 29.6), random=(24.0, 24.9, 23.8), small=(27.0, 27.3, 26.4))
    return pd.DataFrame([dict(method=m, seed=s, acc=v, status='done') for m, vs in accs.items() for s, v in enumerate(vs)])


def test_judge_primary_secondaries_untestable_and_not_run():
    claims = check_claims([
        Claim('ssl', 'SSL beats random init', dict(method='ssl'), dict(method='random'), 'acc', paper=dict(a=28.55, b=24.24), effect=4.31, primary=True),
        Claim('small', 'the small model beats the full one', dict(method='small'), dict(method='ssl'), 'acc', effect=1.0),
        Claim('small2', 'the small model beats random init', dict(method='small'), dict(method='random'), 'acc', effect=1.0),
        Claim('seg', 'SSL beats random init on segmentation', untestable='no segmentation data'),
        Claim('big', 'a bigger model beats it', dict(method='big'), dict(method='ssl'), 'acc', underpowered='a +0.1 effect')])
    t = judge(claims, _table()).set_index('id')
    assert list(t.verdict) == ['holds', 'fails', 'holds', 'untestable', 'not run']
    assert t.level['ssl'] == 0.05                                   # the primary alone
    assert sorted(t.level[['small', 'small2']]) == pytest.approx([0.025, 0.05])   # Holm over the two tested secondaries
    d = np.array([30.0 - 24.0, 30.6 - 24.9, 29.6 - 23.8])           # the primary, paired by seed, by hand
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert (t.lo['ssl'], t.hi['ssl']) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    md = verdicts_markdown(judge(claims, _table()))
    assert '**primary** `ssl`' in md and 'untestable' in md and 'declared underpowered' in md


def test_claims_are_checked_when_declared():
    with pytest.raises(ValueError, match='expect'): Claim('x', 's', metric='acc', expect='bigger')
    with pytest.raises(ValueError, match='metric'): Claim('x', 's')
    with pytest.raises(ValueError, match='primary'): Claim('x', 's', untestable='why', primary=True)
    c = Claim('x', 's', metric='acc', primary=True)
    with pytest.raises(ValueError, match='exactly one primary'): check_claims([Claim('y', 's', metric='acc')])
    with pytest.raises(ValueError, match='unique'): check_claims([c, c])


def test_verdict_table_keeps_old_call_sites():
    t = verdict_table([dict(claim='A beats B', a=[3, 4, 5], b=[1, 1.5, 1]), dict(claim='ratio', verdict='inconclusive', text='a ratio')])
    assert list(t.verdict) == ['holds', 'inconclusive'] and t.gap.iloc[0] == pytest.approx(4.0 - 3.5 / 3)


def test_the_papers_effect_is_placed_against_the_interval():
    "Paired gaps 2, 3, 4: mean 3, sd 1, 95% CI 3 -+ 4.303 / sqrt 3 = [0.52, 5.48]; effects 6 (above), 1 (inside), -1 (below)."
    from ssl_study.claims import verdict
    a, b = {0: 12.0, 1: 13.0, 2: 14.0}, {0: 10.0, 1: 10.0, 2: 10.0}
    out = {e: verdict(a, b, effect=e) for e in (6.0, 1.0, -1.0)}
    assert all(v['verdict'] == 'holds' for v in out.values()) and abs(out[1.0]['hi'] - (3 + 4.302653 / 3 ** 0.5)) < 1e-5
    assert [out[e]['effect_outside'] for e in (6.0, 1.0, -1.0)] == ['above', None, 'below']
    assert "the paper's effect +6.0 lies above the interval" in out[6.0]['text'] and 'lies' not in out[1.0]['text']
    assert verdict(a, b)['effect_outside'] is None              # no effect given: nothing said
