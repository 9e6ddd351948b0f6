"""Which CPUs the engine and the agent run on: chosen from the CPUs the agent was given (its
affinity mask: the kubelet's cpuset in a Pod), the plan's cores when they are among them."""
import pytest

from tickwire_agent.tuning.cpu import CpuShortage, choose_cpus


def test_the_plans_cores_when_all_were_given_and_the_rest_for_housekeeping():
    choice = choose_cpus([2, 3], {1, 2, 3, 4})
    assert (choice.engine, choice.housekeeping, choice.planned) == ((2, 3), (1, 4), True)
    assert choice.poll_core == 2
    assert choice.describe([2, 3]) == "engine poll thread on CPU 2, agent threads on CPU 1,4"


def test_cpus_the_kubelet_gave_when_the_plans_are_not_among_them():
    # The static CPU manager gave CPUs 5-6 to a Pod whose plan named CPU 2: the engine runs on
    # one of the given CPUs and the agent keeps the lowest for its own threads.
    choice = choose_cpus([2], {5, 6})
    assert (choice.engine, choice.housekeeping, choice.planned) == ((6,), (5,), False)
    assert "the plan's CPU 2 is not among the CPUs this agent was given, 5-6" in choice.describe([2])


def test_a_plan_core_partly_given_is_not_half_used():
    choice = choose_cpus([2, 3], {3, 7, 8})
    assert (choice.engine, choice.housekeeping) == ((7, 8), (3,))


def test_more_cpus_than_needed_leave_the_spares_to_housekeeping():
    choice = choose_cpus([9], range(4))          # a shared pool: no exclusive CPUs at all
    assert (choice.engine, choice.housekeeping) == ((1,), (0, 2, 3))


@pytest.mark.parametrize("cores, given", [([1], {1}), ([1], {0}), ([2, 3], {2, 3}), ([2, 3], {0, 5})])
def test_too_few_cpus_is_a_clear_permanent_error(cores, given):
    with pytest.raises(CpuShortage) as e:
        choose_cpus(cores, given)
    needed = len(cores) + 1
    assert f"its plan needs {needed}" in str(e.value)
    assert f"give the Pod {needed} integer CPUs" in str(e.value)
