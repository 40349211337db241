"""Local servers standing in for services outside this project (AWS, Slack, Azure ARM)."""
