"""Local fakes of internet services the tests cannot reach, speaking their real wire formats."""
