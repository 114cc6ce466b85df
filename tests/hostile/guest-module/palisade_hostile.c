// SPDX-License-Identifier: GPL-2.0
/*
 * palisade_hostile: a guest kernel module for Palisade's hostile tests. It does, in ring 0,
 * what a malicious or broken guest kernel does to its virtual hardware:
 *
 *   action=spin    every vCPU spins forever with interrupts off (no timer, no watchdog:
 *                  the guest never comes back; only its host can stop it)
 *   action=triple  loads an IDT of limit 0 and raises an exception: the exception, the
 *                  #GP its delivery raises and the #DF all fail, so the vCPU triple-faults
 *                  (on x86 hardware: a reset)
 *   action=mmio    writes and reads back pages of guest-physical address space no device
 *                  claims (prints what came back), then returns
 *
 * Triggered at load (insmod palisade_hostile.ko action=spin) or later through
 * /sys/module/palisade_hostile/parameters/action. Never load it anywhere but a test guest.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/smp.h>
#include <linux/io.h>
#include <linux/string.h>
#include <asm/desc.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Palisade tests");
MODULE_DESCRIPTION("Hostile guest kernel behaviour for Palisade's hostile tests");

static void spin_forever(void *unused)
{
	local_irq_disable();
	for (;;)
		cpu_relax();
}

static void triple_fault(void)
{
	struct desc_ptr empty = { .size = 0, .address = 0 };

	local_irq_disable();
	pr_emerg("palisade_hostile: triple fault now\n");
	asm volatile("lidt %0" : : "m"(empty));
	asm volatile("ud2");
	/* Not reached: the vCPU has reset. */
	for (;;)
		cpu_relax();
}

/* Guest-physical ranges no device of Palisade's machines decodes (below 4 GiB, above RAM). */
static const unsigned long unassigned[] = { 0xc0000000UL, 0xd0000000UL, 0xfe000000UL };

static void poke_unassigned_mmio(void)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(unassigned); i++) {
		void __iomem *page = ioremap(unassigned[i], PAGE_SIZE);
		u32 before, after;

		if (!page) {
			pr_info("palisade_hostile: mmio %#lx: ioremap failed\n", unassigned[i]);
			continue;
		}
		before = readl(page);
		writel(0x5a5a5a5a, page);
		after = readl(page);
		iounmap(page);
		pr_info("palisade_hostile: mmio %#lx: read %#x, wrote 0x5a5a5a5a, read %#x\n",
			unassigned[i], before, after);
	}
	pr_info("palisade_hostile: mmio done\n");
}

static int act(const char *what)
{
	if (sysfs_streq(what, "spin")) {
		pr_emerg("palisade_hostile: spinning on all %u vCPUs with interrupts off\n",
			 num_online_cpus());
		/* The other vCPUs by IPI (not waited for), then this one. */
		smp_call_function(spin_forever, NULL, 0);
		spin_forever(NULL);
	} else if (sysfs_streq(what, "triple")) {
		triple_fault();
	} else if (sysfs_streq(what, "mmio")) {
		poke_unassigned_mmio();
	} else if (!sysfs_streq(what, "none")) {
		return -EINVAL;
	}
	return 0;
}

static char action[16] = "none";

static int set_action(const char *value, const struct kernel_param *kp)
{
	int err = param_set_copystring(value, kp);

	if (err)
		return err;
	/* At load time the module is not live yet: init acts on it. */
	if (kp->mod && kp->mod->state != MODULE_STATE_LIVE)
		return 0;
	return act(action);
}

static const struct kernel_param_ops action_ops = {
	.set = set_action,
	.get = param_get_string,
};
static struct kparam_string action_string = { .maxlen = sizeof(action), .string = action };
module_param_cb(action, &action_ops, &action_string, 0600);
MODULE_PARM_DESC(action, "none, spin, triple or mmio");

static int __init palisade_hostile_init(void)
{
	pr_info("palisade_hostile: loaded (action=%s)\n", action);
	return act(action);
}

static void __exit palisade_hostile_exit(void)
{
}

module_init(palisade_hostile_init);
module_exit(palisade_hostile_exit);
