"""Host-side harness of qemu-postcopy-ram: QEMU processes, QMP, the test
guest's reports, and postcopy migration scenarios (main job, benchmark)."""
