"""The shared Philox stream: Random123 known answers, Triton's own generator, and Gumbel statistics."""
import pytest
import torch

from tnops import random as tn_random

# Random123's published known-answer vectors for philox4x32-10: (counter, key, output).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_matches_random123(counter, key, expected):
    seed = key[0] | (key[1] << 32)
    words = tn_random.philox4x32(seed, *[torch.tensor([c]) for c in counter])
    assert tuple(int(w) for w in words) == expected


def test_uniform_matches_triton_randint4x():
    """Our torch stream equals what a Triton kernel draws with tl.randint4x at offset (row << 32) | (v >> 2)."""
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def draw(out_ptr, seed, V: tl.constexpr, QUARTER: tl.constexpr):
        row = tl.program_id(0)
        block = tl.arange(0, QUARTER)
        offset = (row.to(tl.int64) << 32) | block.to(tl.int64)
        u0, u1, u2, u3 = tl.rand4x(seed, offset)
        base = out_ptr + row * V + 4 * block
        tl.store(base + 0, u0)
        tl.store(base + 1, u1)
        tl.store(base + 2, u2)
        tl.store(base + 3, u3)

    rows, vocab, seed = 3, 16, 123456789123
    out = torch.empty(rows, vocab)
    draw[(rows,)](out, seed, V=vocab, QUARTER=vocab // 4)
    ours = tn_random.uniform(seed, torch.arange(rows), torch.arange(vocab))
    # tl.rand is not clamped; only values that hit the clamp may differ.
    assert torch.equal(ours, out.clamp(tn_random.U_MIN, tn_random.U_MAX))


def test_gumbel_slices_agree_with_whole_rows():
    rows = torch.tensor([0, 5, 2**20 + 3])
    whole = tn_random.gumbel(7, rows, 37)
    for start, stop in [(0, 3), (1, 9), (5, 37), (36, 37), (12, 28)]:
        torch.testing.assert_close(tn_random.gumbel(7, rows, 37, start, stop), whole[:, start:stop], rtol=0, atol=0)


def test_gumbel_moments():
    g = tn_random.gumbel(11, torch.arange(64), 4096).double()
    euler_gamma = 0.5772156649
    assert abs(g.mean().item() - euler_gamma) < 0.01
    assert abs(g.var().item() - torch.pi**2 / 6) < 0.03
    assert torch.isfinite(g).all()


def test_words_to_uniform_stays_inside_open_interval():
    extremes = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1])
    u = tn_random.words_to_uniform(extremes)
    assert (u > 0).all() and (u < 1).all()
    assert torch.isfinite(-torch.log(-torch.log(u))).all()


def test_draw_seed_follows_manual_seed():
    torch.manual_seed(5)
    a = tn_random.draw_seed()
    torch.manual_seed(5)
    assert tn_random.draw_seed() == a
    assert tn_random.draw_seed() != a


def test_native_gumbel_is_bit_identical_to_the_tensor_stream(monkeypatch):
    """The C++ op (csrc/philox.h) and the torch ops draw the same words and the same floats, bit for bit,
    so CPU samples never depend on whether the extension is built (DESIGN §4)."""
    native = tn_random.native_gumbel()
    if native is None:
        pytest.skip("tnops._native is not built (TNOPS_SKIP_NATIVE=1 or no compiler)")
    rows = torch.cat([torch.tensor([0, 3, 2**31 + 7, 2**32 - 1]), torch.randint(0, 2**32, (60,))])
    for seed, start, stop in [(5, 0, 30522), (2**63 + 11, 3, 57), (0, 12, 13)]:
        fast = tn_random.gumbel(seed, rows, stop, start, stop)
        monkeypatch.setattr(tn_random, "_NATIVE", False)
        slow = tn_random.gumbel(seed, rows, stop, start, stop)
        monkeypatch.undo()
        assert torch.equal(fast, slow), f"seed {seed}: {(fast != slow).sum()} cells differ"


def test_log_f32_is_within_one_ulp_of_float64_log():
    x = torch.cat([torch.rand(1 << 20) * 17 + 2**-24, 1 - torch.rand(1 << 16) * 2**-10,
                   torch.tensor([2**-24, 1 - 2**-24, 0.5, 2.0, 0.70710677, 0.7071068, 16.63553])])
    exact = torch.log(x.double())
    ulp = (torch.nextafter(exact.float(), torch.tensor(float("inf"))).double() - exact.float().double()).abs()
    err = ((tn_random.log_f32(x).double() - exact).abs() / ulp).max().item()
    assert err <= 1.0, f"log_f32 is {err:.2f} ulp off"
