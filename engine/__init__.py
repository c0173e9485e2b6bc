# Before any module of this package imports torch: OpenMP waits must sleep (common/cpu_wait.py).
from common.cpu_wait import sleep_while_waiting

sleep_while_waiting()
