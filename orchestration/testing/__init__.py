"""The kernel's test harness: worker hosts on one machine (netns.py for the links, hosts.py for
the hosts and their processes). Domain-free; Django is needed only by hosts.py."""
