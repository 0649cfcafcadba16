"""The fault suite (issue 10 part C): the services under crashes, broker outages, duplicate
storms and a faulty Composable Commerce, against real processes; ``make faults``."""
