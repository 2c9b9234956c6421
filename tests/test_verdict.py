"runs.verdict and runs.verdict_table against hand-computed gaps and standard errors."
import math
import pytest
from ssl_study.runs import verdict, verdict_table

def test_gap_and_se_by_hand():
    v = verdict([1, 2, 3], [0, 0, 0])           # var_a = 1, var_b = 0 -> SE = sqrt(1/3)
    assert v['gap'] == pytest.approx(2.0) and v['se'] == pytest.approx(1 / math.sqrt(3))
    assert (v['verdict'], v['n_a'], v['n_b']) == ('holds', 3, 3)
    assert v['text'] == 'holds: 2.0 vs 0.0 (gap +2.0, 2 SE = 1.2, 3 vs 3 seeds)'

def test_unequal_arms_by_hand():
    # a = 9, 13: mean 11, sample var 8; b = 10, 10, 13: mean 11, sample var 3
    v = verdict([9, 13], [10, 10, 13])
    assert v['gap'] == pytest.approx(0.0) and v['se'] == pytest.approx(math.sqrt(8 / 2 + 3 / 3))
    assert v['verdict'] == 'inconclusive'

def test_directions():
    assert verdict([1, 2, 3], [0, 0, 0], 'less')['verdict'] == 'fails'
    assert verdict([0, 0, 0], [1, 2, 3], 'less')['verdict'] == 'holds'
    assert verdict([0, 0, 0], [1, 2, 3])['verdict'] == 'fails'
    # gap 1 with SE = 1/sqrt(3) = 0.577: 2 SE = 1.15 > 1 -> inconclusive either way
    assert verdict([0, 1, 2], [0, 0, 0])['verdict'] == 'inconclusive'
    assert verdict([0, 1, 2], [0, 0, 0], 'less')['verdict'] == 'inconclusive'
    with pytest.raises(ValueError): verdict([1, 2], [0, 1], 'bigger')

def test_ties():
    assert verdict([1, 2, 3], [1, 2, 3])['verdict'] == 'inconclusive'
    v = verdict([5, 5], [5, 5])                 # SE 0 and gap 0: not beyond 2 SE
    assert v['verdict'] == 'inconclusive' and v['gap'] == 0 and v['se'] == 0

def test_one_seed_and_empty():
    v = verdict([5.0], [1, 2, 3])
    assert v['verdict'] == 'inconclusive' and 'one seed' in v['text'] and v['gap'] == pytest.approx(3.0)
    assert math.isnan(v['se'])
    assert verdict([], [1, 2])['verdict'] == 'inconclusive'

def test_nan_and_none_dropped():
    v = verdict([1, float('nan'), 2, None, 3], [0, 0, float('nan'), 0])
    assert (v['n_a'], v['n_b'], v['verdict']) == (3, 3, 'holds')
    assert v['se'] == pytest.approx(1 / math.sqrt(3))

def test_verdict_table():
    t = verdict_table([dict(claim='a > b', a=[3, 4, 5], b=[1, 1, 1]),
                       dict(claim='a < b', a=[3, 4, 5], b=[1, 1, 1], expect='less'),
                       dict(claim='ratio', verdict='inconclusive', text='inconclusive: ratio 1.2')])
    assert list(t.claim) == ['a > b', 'a < b', 'ratio']
    assert list(t.verdict) == ['holds', 'fails', 'inconclusive']
    assert t.gap.iloc[0] == pytest.approx(3.0)
